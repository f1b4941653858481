"""Spatial size through a network from the shape formulas, without running it."""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..layers import GlobalAvgPool2d
from ..ops import conv2d_output_size, pool2d_output_size


class InputSizeError(UserError):
    """An input too small for a network: names the layer where the feature map vanishes."""


def feature_size(module: nn.Module, size: int, name: str = "") -> int:
    """Side of the (square) feature map after ``module`` for a ``size x size`` input.

    Blocks whose branches run in parallel (Inception, residual blocks) say how they change the
    size through an ``output_size(size)`` method; other containers are walked in order.
    """
    label = name or type(module).__name__
    try:
        if hasattr(module, "output_size") and callable(module.output_size):
            return module.output_size(size)
        if isinstance(module, nn.Conv2d):
            if module.padding == "same":
                return size
            padding = 0 if module.padding == "valid" else module.padding
            return conv2d_output_size(size, module.kernel_size, module.stride, padding, module.dilation)[0]
        if isinstance(module, nn.MaxPool2d):
            return pool2d_output_size(size, module.kernel_size, module.stride, module.padding, module.dilation,
                                      module.ceil_mode)[0]
        if isinstance(module, nn.AvgPool2d):
            return pool2d_output_size(size, module.kernel_size, module.stride, module.padding,
                                      ceil_mode=module.ceil_mode)[0]
    except InputSizeError:
        raise
    except ValueError as exc:
        raise InputSizeError(f"the feature map vanishes at layer {label!r} ({type(module).__name__}) on a "
                             f"{size}x{size} map: {exc}") from None
    if isinstance(module, (GlobalAvgPool2d, nn.AdaptiveAvgPool2d)):
        return 1
    for child_name, child in module.named_children():
        size = feature_size(child, size, f"{name}.{child_name}" if name else child_name)
    return size


def check_input_size(model_name: str, module: nn.Module, size: int) -> int:
    """``feature_size`` with a message that names the model and the input."""
    if size < 1:
        raise InputSizeError(f"input size must be positive, got {size}")
    try:
        return feature_size(module, size)
    except InputSizeError as exc:
        raise InputSizeError(f"input {size}x{size} is too small for {model_name}: {exc}") from None
