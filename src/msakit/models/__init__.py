"""Models: one file per method and a registry (``create_model``)."""

from msakit.models.registry import available_models, create_model, register_model

__all__ = ["available_models", "create_model", "register_model"]
