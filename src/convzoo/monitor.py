"""Watching a run's numbers: a loss that diverges stops it, a run stuck at chance is reported."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import distributed
from .config import TrainConfig
from .data import CLASSES
from .errors import DivergenceError

# Epochs at chance accuracy after which a run is reported as not learning. Not 1: trained on the
# full training set, the book's LeNet recipe is at 0.11 test accuracy after its first epoch and at
# 0.66 after its second (measured on 2,000 test images); the NiN and GoogLeNet recipes that stall
# stay at 0.10 for every epoch.
STALL_EPOCHS = 2


def divergence_check_interval(device: torch.device) -> int:
    """Training steps between checks that the loss is finite.

    Every step on the CPU, where reading a scalar costs nothing. On a GPU reading it waits for the
    device to finish the step, so the check reads the epoch's running loss sum (on the device, NaN
    once any step's loss was) every 50 steps and at the end of each epoch: a divergence stops the
    run at most 50 steps late, always before the epoch's checkpoint is written.
    """
    return 1 if device.type == "cpu" else 50


def check_finite(loss_sum: torch.Tensor, config: TrainConfig, where: tuple[int, int, int], lr: float,
                 resume_hint: Callable[[], str]) -> None:
    """Raise ``DivergenceError`` if the running loss sum of any rank is NaN or infinite.

    ``where`` is (epoch, step, steps per epoch), counted from 0; ``resume_hint()`` says what the
    run directory keeps and how to continue it.
    """
    bad = (~torch.isfinite(loss_sum)).to(torch.int32).view(1)
    distributed.all_reduce_sum(bad)
    if not bad.item():
        return
    epoch, step, steps = where
    value = float(loss_sum)
    became = f"became {value}" if not math.isfinite(value) else "became non-finite on another rank"
    suggestion = f"{config.lr / 10:g}"
    fast = " (or --recipe fast)" if config.recipe != "fast" else ""
    raise DivergenceError(
        f"the training loss {became} in epoch {epoch + 1} (by step {step + 1} of {steps}, lr {lr:g}): "
        f"the learning rate is likely too high for {config.model} with the {config.recipe} recipe; "
        f"try --lr {suggestion}{fast}. {resume_hint()} --lr {suggestion}")


def not_learning(history: list[dict], config: TrainConfig) -> str | None:
    """The warning for a run whose test accuracy stayed at chance level (<= 1/classes + 0.02) in every epoch of
    ``history``, else None."""
    chance = 1 / len(CLASSES)
    accuracies = [row["test_acc"] for row in history]
    if not accuracies or max(accuracies) > chance + 0.02:
        return None
    fast = " or use --recipe fast" if config.recipe != "fast" else ""
    return (f"{config.model} is not learning: test accuracy has stayed at chance ({chance:.2f}) for "
            f"{len(accuracies)} epochs ({', '.join(f'{a:.4f}' for a in accuracies)}); lower the learning rate "
            f"(e.g. --lr {config.lr / 10:g}){fast}")
