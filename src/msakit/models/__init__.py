"""The models: one file (or package) each, found through the registry
(:mod:`msakit.models.registry`); the contract every model follows is :mod:`msakit.models.base`."""

from msakit.models.base import LOCAL, Batch, LossContext, ModelOutput, MSAModel
from msakit.models.registry import ModelSpec, create_model, model_names, model_spec, register_model

__all__ = ["LOCAL", "Batch", "LossContext", "MSAModel", "ModelOutput", "ModelSpec",
           "create_model", "model_names", "model_spec", "register_model"]
