"""ResNet-18 as the course trains it on Fashion-MNIST at 96x96."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import layers_for
from ..ops import conv2d_output_size
from .registry import register_model
from .shapes import check_input_size


class Residual(nn.Module):
    """Two 3x3 conv-BN layers plus the input (through a strided 1x1 conv when the shape changes)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, use_1x1conv: bool = False, stride: int = 1,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        L = layers_for(backend)
        self.stride = stride
        self.conv1 = L.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, stride=stride)
        self.conv2 = L.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv3 = L.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride) if use_1x1conv else None
        self.bn1 = L.BatchNorm2d(out_channels)
        self.bn2 = L.BatchNorm2d(out_channels)

    def output_size(self, size: int) -> int:
        return conv2d_output_size(size, 3, self.stride, 1)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


def resnet_block(
    in_channels: int, out_channels: int, num_residuals: int, *, first_block: bool = False, backend: str = "torch"
) -> nn.Sequential:
    """``num_residuals`` residual units; the first halves the size unless it is the first block."""
    units = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            units.append(Residual(in_channels, out_channels, use_1x1conv=True, stride=2, backend=backend))
        else:
            units.append(Residual(out_channels, out_channels, backend=backend))
    return nn.Sequential(*units)


@register_model(input_size=96)
def resnet18(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 96, backend: str = "torch") -> nn.Module:
    """ResNet-18: a stem, four stages of two residual units (64-128-256-512), global average pooling."""
    L = layers_for(backend)
    model = nn.Sequential(
        nn.Sequential(
            L.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), L.BatchNorm2d(64), nn.ReLU(),
            L.MaxPool2d(kernel_size=3, stride=2, padding=1),  # N x 64 x 24 x 24
        ),
        resnet_block(64, 64, 2, first_block=True, backend=backend),  # N x 64 x 24 x 24
        resnet_block(64, 128, 2, backend=backend),  # N x 128 x 12 x 12
        resnet_block(128, 256, 2, backend=backend),  # N x 256 x 6 x 6
        resnet_block(256, 512, 2, backend=backend),  # N x 512 x 3 x 3
        L.GlobalAvgPool2d(), L.Flatten(),  # N x 512
        nn.Linear(512, num_classes),
    )
    check_input_size("resnet18", model, input_size)
    return model
