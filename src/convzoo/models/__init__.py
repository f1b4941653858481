"""The model zoo: a registry of builders, one file per family.

>>> from convzoo.models import create_model, list_models
>>> model = create_model("lenet")
"""

from . import alexnet, googlenet, lenet, nin, resnet, vgg  # noqa: F401  (registers the builders)
from .googlenet import Inception
from .initialization import INITS, init_weights
from .nin import nin_block
from .registry import ModelSpec, UnknownModelError, create_model, get_model_spec, list_models, rebuild, register_model
from .resnet import Residual, resnet_block
from .shapes import InputSizeError, check_input_size, feature_size
from .vgg import vgg, vgg_block  # noqa: F811  (the builder, not the module)

__all__ = [
    "INITS",
    "Inception",
    "InputSizeError",
    "ModelSpec",
    "Residual",
    "UnknownModelError",
    "check_input_size",
    "create_model",
    "feature_size",
    "get_model_spec",
    "init_weights",
    "list_models",
    "nin_block",
    "rebuild",
    "register_model",
    "resnet_block",
    "vgg",
    "vgg_block",
]
