"""Network in Network: conv blocks with 1x1 "per-pixel MLP" layers and a global-average-pool head."""

from __future__ import annotations

from torch import nn

from ..layers import layers_for
from .registry import register_model
from .shapes import check_input_size


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, *, backend: str = "torch"
) -> nn.Sequential:
    """A convolution followed by two 1x1 convolutions, each with ReLU."""
    L = layers_for(backend)
    return nn.Sequential(
        L.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(),
        L.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
        L.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU(),
    )


@register_model(input_size=224)
def nin(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 224, backend: str = "torch") -> nn.Module:
    """NiN: four NiN blocks, the last with one channel per class, averaged into the logits."""
    L = layers_for(backend)
    model = nn.Sequential(
        nin_block(in_channels, 96, 11, 4, 0, backend=backend),  # N x 96 x 54 x 54
        L.MaxPool2d(kernel_size=3, stride=2),  # N x 96 x 26 x 26
        nin_block(96, 256, 5, 1, 2, backend=backend),  # N x 256 x 26 x 26
        L.MaxPool2d(kernel_size=3, stride=2),  # N x 256 x 12 x 12
        nin_block(256, 384, 3, 1, 1, backend=backend),  # N x 384 x 12 x 12
        L.MaxPool2d(kernel_size=3, stride=2),  # N x 384 x 5 x 5
        nn.Dropout(0.5),
        nin_block(384, num_classes, 3, 1, 1, backend=backend),  # N x 10 x 5 x 5
        L.GlobalAvgPool2d(),  # N x 10 x 1 x 1
        L.Flatten(),  # N x 10
    )
    check_input_size("nin", model, input_size)
    return model
