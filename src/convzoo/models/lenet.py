"""LeNet-5 as the chapter trains it on Fashion-MNIST, and the course's BN-LeNet."""

from __future__ import annotations

from torch import nn

from ..layers import layers_for
from .registry import register_model
from .shapes import check_input_size


@register_model(input_size=28)
def lenet(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, backend: str = "torch") -> nn.Module:
    """LeNet-5 (sigmoid, average pooling), the chapter's network; 61,706 parameters at 28x28."""
    L = layers_for(backend)
    features = [
        L.Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.Sigmoid(),  # N x 6 x 28 x 28
        L.AvgPool2d(kernel_size=2, stride=2),  # N x 6 x 14 x 14
        L.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),  # N x 16 x 10 x 10
        L.AvgPool2d(kernel_size=2, stride=2),  # N x 16 x 5 x 5
    ]
    side = check_input_size("lenet", nn.Sequential(*features), input_size)
    return nn.Sequential(
        *features,
        L.Flatten(),  # N x 400
        nn.Linear(16 * side * side, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )


@register_model(input_size=28)
def lenet_bn(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, backend: str = "torch") -> nn.Module:
    """LeNet with batch normalisation after every conv and hidden linear layer (the course's BN-LeNet)."""
    L = layers_for(backend)
    features = [
        L.Conv2d(in_channels, 6, kernel_size=5), L.BatchNorm2d(6), nn.Sigmoid(),  # N x 6 x 24 x 24
        L.AvgPool2d(kernel_size=2, stride=2),  # N x 6 x 12 x 12
        L.Conv2d(6, 16, kernel_size=5), L.BatchNorm2d(16), nn.Sigmoid(),  # N x 16 x 8 x 8
        L.AvgPool2d(kernel_size=2, stride=2),  # N x 16 x 4 x 4
    ]
    side = check_input_size("lenet_bn", nn.Sequential(*features), input_size)
    return nn.Sequential(
        *features,
        L.Flatten(),  # N x 256
        nn.Linear(16 * side * side, 120), L.BatchNorm1d(120), nn.Sigmoid(),
        nn.Linear(120, 84), L.BatchNorm1d(84), nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )


@register_model(input_size=28)
def lenet_modern(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 backend: str = "torch") -> nn.Module:
    """LeNet with the book's exercise changes: max-pooling, ReLU, batch norm, 16/32 channels, one hidden layer.

    Each block is conv -> max-pool -> batch norm -> ReLU: pooling first leaves the normalisation
    and the ReLU a quarter of the values, which makes the network about 1.5x faster on a CPU than
    conv -> BN -> ReLU -> pool. (ReLU commutes with max-pooling, batch norm does not, so the two
    orders are different networks; both train to the same accuracy.) The ``fast`` recipe trains it
    past 0.91 test accuracy in 4 epochs.
    """
    L = layers_for(backend)
    features = [
        L.Conv2d(in_channels, 16, kernel_size=5, padding=2),  # N x 16 x 28 x 28
        L.MaxPool2d(kernel_size=2, stride=2), L.BatchNorm2d(16), nn.ReLU(),  # N x 16 x 14 x 14
        L.Conv2d(16, 32, kernel_size=5),  # N x 32 x 10 x 10
        L.MaxPool2d(kernel_size=2, stride=2), L.BatchNorm2d(32), nn.ReLU(),  # N x 32 x 5 x 5
    ]
    side = check_input_size("lenet_modern", nn.Sequential(*features), input_size)
    return nn.Sequential(
        *features,
        L.Flatten(),  # N x 800
        nn.Linear(32 * side * side, 128), L.BatchNorm1d(128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )
