"""AlexNet as the book trains it on Fashion-MNIST: one input channel, 224x224, 10 classes.

The chapter's listing leaves out the ReLU after the first convolution and the second 4096-wide
layer ("for a CPU image"); this is the book's full network, which has both.
"""

from __future__ import annotations

from torch import nn

from ..layers import layers_for
from .registry import register_model
from .shapes import check_input_size


@register_model(input_size=224)
def alexnet(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 224, backend: str = "torch") -> nn.Module:
    """AlexNet: 5 convolutions with ReLU and max pooling, two 4096-wide layers with dropout 0.5."""
    L = layers_for(backend)
    features = [
        L.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),  # N x 96 x 54 x 54
        L.MaxPool2d(kernel_size=3, stride=2),  # N x 96 x 26 x 26
        L.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),  # N x 256 x 26 x 26
        L.MaxPool2d(kernel_size=3, stride=2),  # N x 256 x 12 x 12
        L.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),  # N x 384 x 12 x 12
        L.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        L.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),  # N x 256 x 12 x 12
        L.MaxPool2d(kernel_size=3, stride=2),  # N x 256 x 5 x 5
    ]
    side = check_input_size("alexnet", nn.Sequential(*features), input_size)
    return nn.Sequential(
        *features,
        L.Flatten(),  # N x 6400
        nn.Linear(256 * side * side, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )
