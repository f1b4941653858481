"""VGG: networks built from a table of blocks, each ``num_convs`` 3x3 convolutions and a 2x2 max pool."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..layers import layers_for
from .registry import register_model
from .shapes import check_input_size

VGG11_ARCH: tuple[tuple[int, int], ...] = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def vgg_block(num_convs: int, in_channels: int, out_channels: int, *, backend: str = "torch") -> nn.Sequential:
    """``num_convs`` size-keeping 3x3 convolutions with ReLU, then a 2x2 max pool that halves the size."""
    L = layers_for(backend)
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [L.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(L.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(
    conv_arch: Sequence[tuple[int, int]], *, num_classes: int = 10, in_channels: int = 1, input_size: int = 224,
    fc_hidden: int = 4096, backend: str = "torch", name: str = "vgg",
) -> nn.Sequential:
    """A VGG from ``conv_arch``, a table of ``(num_convs, out_channels)`` per block."""
    L = layers_for(backend)
    blocks = []
    for num_convs, out_channels in conv_arch:
        blocks.append(vgg_block(num_convs, in_channels, out_channels, backend=backend))
        in_channels = out_channels
    side = check_input_size(name, nn.Sequential(*blocks), input_size)
    return nn.Sequential(
        *blocks,  # N x 512 x 7 x 7 for VGG-11 at 224
        L.Flatten(),
        nn.Linear(in_channels * side * side, fc_hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(fc_hidden, fc_hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(fc_hidden, num_classes),
    )


@register_model(input_size=224)
def vgg11(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 224, backend: str = "torch") -> nn.Module:
    """VGG-11: 8 convolutions in 5 blocks (64-128-256-512-512 channels) and three linear layers."""
    return vgg(VGG11_ARCH, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
               backend=backend, name="vgg11")


@register_model(input_size=224)
def vgg11_small(
    *, num_classes: int = 10, in_channels: int = 1, input_size: int = 224, backend: str = "torch"
) -> nn.Module:
    """VGG-11 with a quarter of the channels (16-32-64-128-128), the variant the book trains."""
    small = tuple((num_convs, channels // 4) for num_convs, channels in VGG11_ARCH)
    return vgg(small, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
               backend=backend, name="vgg11_small")
