"""Watching a run's numbers: a loss that diverges stops it, a run stuck at chance is reported."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import distributed
from .checkpoint import epoch_score
from .config import TrainConfig
from .errors import DivergenceError
from .terms import setting

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


# A running mean loss this many times the run's first is a divergence, NaN or not: cross-entropy
# starts near ln(10) = 2.3 and, in a run that learns, only falls.
EXPLOSION = 100.0


class LossWatch:
    """Stops a run whose training loss diverges: it became NaN or infinite, or grew ``EXPLOSION`` times above the
    mean loss of the run's first checked steps.

    ``check`` reads the epoch's running loss sum (on the device) and the examples it covers on this
    rank; under torchrun every rank learns whether any rank diverged, so all of them stop together.
    """

    def __init__(self, config: TrainConfig, resume_hint: Callable[..., str], *, num_classes: int = 10) -> None:
        self.config = config
        self.num_classes = num_classes
        self.resume_hint = resume_hint
        self.start: float | None = None  # the mean loss at the first check

    def check(self, loss_sum: torch.Tensor, seen: int, where: tuple[int, int, int], lr: float) -> None:
        """Raise ``DivergenceError`` if the loss diverged; ``where`` is (epoch, step, steps per epoch), from 0."""
        mean = loss_sum / max(seen, 1)
        bad = ~torch.isfinite(mean)
        if self.start is not None:
            bad |= mean > self.limit
        bad = bad.to(torch.int32).view(1)
        distributed.all_reduce_sum(bad)
        if not bad.item():
            if self.start is None:
                self.start = float(mean)
            return
        raise DivergenceError(self._message(float(mean), where, lr))

    @property
    def limit(self) -> float:
        """The mean loss that counts as diverged: ``EXPLOSION`` times the first, and never below ``EXPLOSION`` times
        chance's cross-entropy (so that a resumed run, whose loss starts low, is not stopped by noise)."""
        return EXPLOSION * max(self.start or 0.0, math.log(self.num_classes))

    def _message(self, mean: float, where: tuple[int, int, int], lr: float) -> str:
        epoch, step, steps = where
        if not math.isfinite(mean):
            what = f"became {mean}"
        elif self.start is not None and mean > self.limit:
            what = f"grew from {self.start:.3g} to {mean:.3g}"
        else:
            what = "diverged on another rank"
        config, suggestion = self.config, self.config.lr / 10
        head = f"the training loss {what} in epoch {epoch + 1} (by step {step + 1} of {steps}, lr {lr:g}): "
        hint = self.resume_hint()
        if config.optimizer == "sgd" and config.momentum >= 1:
            return (head + f"{setting('momentum', config.momentum)} makes SGD diverge at any learning rate; a lower "
                    f"learning rate cannot help: use a momentum below 1 (0.9 is usual). {hint}")
        if lr < 1e-6:
            return (head + f"the learning rate is already tiny, so lowering it further is unlikely to help; check "
                    f"the other settings of the run ({setting('weight_decay', config.weight_decay)}, "
                    f"{setting('init', config.init)}). "
                    f"{hint}")
        fast = f" (or {setting('recipe', 'fast')})" if config.recipe != "fast" else ""
        hint = self.resume_hint(lr=suggestion)
        return (head + f"the learning rate is likely too high for {config.model} with the {config.recipe} recipe; "
                f"try {setting('lr', suggestion)}{fast}. {hint}")


CHANCE_MARGIN = 0.02  # test accuracy within this of 1/classes counts as chance


def at_chance(accuracy: float, num_classes: int = 10) -> bool:
    return accuracy <= 1 / num_classes + CHANCE_MARGIN


def _advice(history: list[dict], config: TrainConfig, num_classes: int) -> str:
    """What to try for a run at chance. A training loss that sits at ln(classes) means the signal vanished at the
    initialisation (benchmarks/README.md, the seed sweep): a lower learning rate only lengthens that plateau."""
    fast = f" or use {setting('recipe', 'fast')}" if config.recipe != "fast" else ""
    if abs(history[-1]["train_loss"] - math.log(num_classes)) < 0.02 and config.init != "kaiming":
        return (f"its training loss sits at ln {num_classes} = {math.log(num_classes):.3f}, where the signal "
                f"vanished at initialisation: try {setting('init', 'kaiming')} (He weights){fast}")
    return f"lower the learning rate (e.g. {setting('lr', config.lr / 10)}){fast}"


def not_learning(history: list[dict], config: TrainConfig, num_classes: int = 10) -> str | None:
    """The warning for a run whose test accuracy stayed at chance level (<= 1/classes + 0.02) in every epoch of
    ``history``, else None."""
    chance = 1 / num_classes
    accuracies = [epoch_score(row)[1] for row in history]
    if not accuracies or not all(at_chance(a, num_classes) for a in accuracies):
        return None
    return (f"{config.model} is not learning: {_scored_on(history)} accuracy has stayed at chance ({chance:.2f}) for "
            f"{len(accuracies)} epochs ({', '.join(f'{a:.4f}' for a in accuracies)}); "
            f"{_advice(history, config, num_classes)}")


def fell_back(history: list[dict], config: TrainConfig, num_classes: int = 10) -> str | None:
    """The warning for a run whose latest epoch is at chance after an earlier one was above it, else None."""
    accuracies = [epoch_score(row)[1] for row in history]
    if len(accuracies) < 2 or not at_chance(accuracies[-1], num_classes) or all(at_chance(a, num_classes)
                                                                                 for a in accuracies[:-1]):
        return None
    best = max(range(len(accuracies)), key=accuracies.__getitem__)
    return (f"{config.model} fell back to chance: {_scored_on(history)} accuracy {accuracies[-1]:.4f} in epoch "
            f"{len(accuracies)}, after {accuracies[best]:.4f} in epoch {best + 1}; "
            f"{_advice(history, config, num_classes)}")


def finished_at_chance(history: list[dict], config: TrainConfig, num_classes: int = 10) -> str | None:
    """The warning for a run that ended at chance (said at its end, however it got there), else None."""
    if not history or not at_chance(epoch_score(history[-1])[1], num_classes):
        return None
    split, accuracy = epoch_score(history[-1])
    return (f"{config.model} finished at chance: {split} accuracy {accuracy:.4f} after "
            f"{len(history)} epoch{'s' if len(history) != 1 else ''}; the model did not learn")


def _scored_on(history: list[dict]) -> str:
    """``test`` or ``validation``: what the epochs of ``history`` were scored on."""
    return epoch_score(history[-1])[0]
