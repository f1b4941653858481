"""Initial weights: the book's Xavier, He for deep ReLU stacks, or PyTorch's own."""

from __future__ import annotations

from torch import nn

INITS = ("xavier", "kaiming", "default")


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialise every Conv2d and Linear weight by ``scheme``; ``default`` keeps PyTorch's own.

    ``xavier``: the book's Xavier-uniform weights (biases kept). ``kaiming``: He-normal
    convolutions (fan-out, for ReLU), linear weights from N(0, 0.01), zero biases, as
    torchvision initialises VGG: it keeps the signal's scale through deep ReLU stacks without
    batch norm, where PyTorch's default shrinks it layer by layer until nothing trains.
    """
    if scheme not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {scheme!r}")
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(module.weight)
        elif scheme == "kaiming":
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
