"""Scoring a model on batches: accuracy, loss, confusion matrix and predictions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import distributed
from .data import CLASSES, Batches
from .step import autocast


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    confusion: np.ndarray  # rows: true class, columns: predicted
    predictions: torch.Tensor  # (N,) int64, on the CPU

    @property
    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(axis=1)
        return [float(self.confusion[i, i] / t) if t else float("nan") for i, t in enumerate(totals)]

    @property
    def count(self) -> int:
        """How many images were scored."""
        return int(self.confusion.sum())


def scores(model: nn.Module, x: torch.Tensor, amp: bool = False, tta: bool = False) -> torch.Tensor:
    """The logits of ``model`` for the batch ``x``; with ``tta``, the mean of those of ``x`` and its mirror image."""
    with autocast(x.device, amp):
        logits = model(x)
        if tta:
            logits = (logits.float() + model(x.flip(-1)).float()) / 2
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, amp: bool = False, tta: bool = False, *,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Accuracy, mean loss, confusion matrix and predictions of ``model`` over ``batches``.

    ``progress(done, total)`` is called after each batch is scored (``convzoo.progress``).

    ``tta`` (test-time augmentation) scores each image by the mean of its logits and those of its
    left-right mirror image, the one transformation training with ``augment`` teaches the model to
    expect: it costs a second forward pass and usually gains a few tenths of a point.

    Under ``torch.distributed`` each rank passes its own contiguous shard of the test set
    (``convzoo.distributed.shard``): the counts and the loss are summed over ranks and the
    predictions gathered in order, so every rank gets the result for the whole set.
    """
    was_training = model.training
    model.eval()
    k = len(CLASSES)
    loss_sum = torch.zeros((), device=batches.device)
    confusion = torch.zeros(k * k, dtype=torch.int64, device=batches.device)
    predictions = [torch.zeros(0, dtype=torch.int64, device=batches.device)]
    for done, (x, y) in enumerate(batches, 1):
        logits = scores(model, x, amp, tta)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        pred = logits.argmax(dim=1)
        confusion += torch.bincount(y * k + pred, minlength=k * k)
        predictions.append(pred)
        if progress is not None:
            progress(done, len(batches))
    model.train(was_training)
    distributed.all_reduce_sum(loss_sum, confusion)
    pred = distributed.all_gather_cat(torch.cat(predictions))
    confusion = confusion.view(k, k)
    n = max(len(pred), 1)
    return Evaluation(int(confusion.trace()) / n, float(loss_sum) / n, confusion.cpu().numpy(), pred.cpu())
