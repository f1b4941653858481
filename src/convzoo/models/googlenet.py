"""GoogLeNet (Inception v1) as the book trains it on Fashion-MNIST at 96x96."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import layers_for
from .registry import register_model
from .shapes import check_input_size


class Inception(nn.Module):
    """Four parallel paths concatenated on channels: ``c1 + c2[1] + c3[1] + c4`` output channels.

    1x1 conv | 1x1 conv -> 3x3 conv | 1x1 conv -> 5x5 conv | 3x3 max pool -> 1x1 conv; every path
    keeps the height and width.
    """

    def __init__(
        self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int, *, backend: str = "torch"
    ) -> None:
        super().__init__()
        L = layers_for(backend)
        self.p1_1 = L.Conv2d(in_channels, c1, kernel_size=1)
        self.p2_1 = L.Conv2d(in_channels, c2[0], kernel_size=1)
        self.p2_2 = L.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.p3_1 = L.Conv2d(in_channels, c3[0], kernel_size=1)
        self.p3_2 = L.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.p4_1 = L.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = L.Conv2d(in_channels, c4, kernel_size=1)

    def output_size(self, size: int) -> int:
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p1 = F.relu(self.p1_1(x))
        p2 = F.relu(self.p2_2(F.relu(self.p2_1(x))))
        p3 = F.relu(self.p3_2(F.relu(self.p3_1(x))))
        p4 = F.relu(self.p4_2(self.p4_1(x)))
        return torch.cat((p1, p2, p3, p4), dim=1)


@register_model(input_size=96)
def googlenet(
    *, num_classes: int = 10, in_channels: int = 1, input_size: int = 96, backend: str = "torch"
) -> nn.Module:
    """GoogLeNet: a stem, nine Inception blocks in three stages, global average pooling."""
    L = layers_for(backend)

    def inception(*args: object) -> Inception:
        return Inception(*args, backend=backend)  # type: ignore[arg-type]

    b1 = nn.Sequential(
        L.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(),  # N x 64 x 48 x 48
        L.MaxPool2d(kernel_size=3, stride=2, padding=1),  # N x 64 x 24 x 24
    )
    b2 = nn.Sequential(
        L.Conv2d(64, 64, kernel_size=1), nn.ReLU(),
        L.Conv2d(64, 192, kernel_size=3, padding=1), nn.ReLU(),
        L.MaxPool2d(kernel_size=3, stride=2, padding=1),  # N x 192 x 12 x 12
    )
    b3 = nn.Sequential(
        inception(192, 64, (96, 128), (16, 32), 32),
        inception(256, 128, (128, 192), (32, 96), 64),
        L.MaxPool2d(kernel_size=3, stride=2, padding=1),  # N x 480 x 6 x 6
    )
    b4 = nn.Sequential(
        inception(480, 192, (96, 208), (16, 48), 64),
        inception(512, 160, (112, 224), (24, 64), 64),
        inception(512, 128, (128, 256), (24, 64), 64),
        inception(512, 112, (144, 288), (32, 64), 64),
        inception(528, 256, (160, 320), (32, 128), 128),
        L.MaxPool2d(kernel_size=3, stride=2, padding=1),  # N x 832 x 3 x 3
    )
    b5 = nn.Sequential(
        inception(832, 256, (160, 320), (32, 128), 128),
        inception(832, 384, (192, 384), (48, 128), 128),
        L.GlobalAvgPool2d(), L.Flatten(),  # N x 1024
    )
    model = nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(1024, num_classes))
    check_input_size("googlenet", model, input_size)
    return model
