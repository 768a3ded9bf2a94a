"""Shipped model weights (safetensors + JSON card), trained with `audiosheet train`."""
