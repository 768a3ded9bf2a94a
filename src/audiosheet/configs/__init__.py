"""Shipped model configurations (JSON), loaded by name with audiosheet.models.checkpoint.load_config."""
