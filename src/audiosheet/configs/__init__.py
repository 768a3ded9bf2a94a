"""Shipped model configurations (JSON), loaded by name with audiosheet.model.load_config."""
