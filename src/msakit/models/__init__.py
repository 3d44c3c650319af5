"""The models: one file each, found through the registry (:mod:`msakit.models.registry`)."""

from msakit.models.registry import ModelSpec, create_model, model_names, model_spec, register_model

__all__ = ["ModelSpec", "create_model", "model_names", "model_spec", "register_model"]
