"""The optimizer of a run and its learning-rate schedule.

``lr_factor`` is a pure function of the step, so a resumed run continues its schedule exactly
with no scheduler state to save.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Learning-rate multiplier at ``step`` of ``total_steps``.

    ``constant``: 1. ``cosine``: cosine annealing from 1 to 0. ``onecycle``: linear warm-up
    over the first 25 % from 0.1, then cosine annealing to 0.
    """
    if schedule == "constant":
        return 1.0
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    warmup = 0.25
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


def make_optimizer(model: nn.Module, config: TrainConfig, *, device: torch.device | None = None,
                   graphable: bool = False) -> torch.optim.Optimizer:
    """The run's optimizer over ``model``'s parameters.

    On CUDA (``device``) the fused implementation: one kernel updates every parameter.
    ``graphable`` (CUDA only) also makes the learning rate a device tensor, so that a CUDA graph
    can capture the update and ``TrainStep.set_lr`` can change the rate between replays.
    """
    fused = device is not None and device.type == "cuda"
    lr: float | torch.Tensor = config.lr
    extra: dict = {"fused": True} if fused else {}
    if graphable and fused:
        lr = torch.tensor(config.lr, device=device)
        if config.optimizer == "adamw":
            extra["capturable"] = True
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay, **extra)
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=config.momentum > 0, **extra,
    )
