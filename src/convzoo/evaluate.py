"""Scoring a model: accuracy, loss, confusion matrix and predictions, on batches or on a run's test split.

    evaluate(model, batches)                          the scores of ``model`` over device batches
    evaluate_model(config, model, images, labels)     scored as a run of ``config`` evaluates (input size, TTA, ...)
    run_data(config)                                  the data set a run of ``config`` trains on (``DataSet``)
    splits(config, data)                              its training and test images and labels, limited as the run is
    validation_split(config, images, labels)          the training split less the validation images it holds out
    test_split(config)                                the test images and labels a run of ``config`` is scored on
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import distributed
from .config import TrainConfig
from .data import CLASSES, NAMED, Batches, DataSet, open_data, stratified_split
from .step import autocast


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    confusion: np.ndarray  # rows: true class, columns: predicted
    predictions: torch.Tensor  # (N,) int64, on the CPU
    labels: torch.Tensor | None = None  # (N,) int64 on the CPU: the true classes
    losses: torch.Tensor | None = None  # (N,) float32 on the CPU: each image's cross-entropy, -log p(true class)
    confidences: torch.Tensor | None = None  # (N,) float32 on the CPU: the probability of the predicted class

    def top_losses(self, count: int | None = None, *, mistakes_only: bool = True) -> list[int]:
        """The indices of the images with the highest loss, highest first (only the misclassified ones unless
        ``mistakes_only`` is False): the mistakes the network was surest of, as fastai's ``top_losses``."""
        if self.losses is None or self.labels is None:
            raise ValueError("this evaluation has no per-image losses")
        order = torch.argsort(self.losses, descending=True, stable=True)
        if mistakes_only:
            order = order[(self.labels != self.predictions)[order]]
        return order[:count].tolist()

    def most_confused(self, count: int = 5) -> list[tuple[int, int, int]]:
        """``(true class, predicted class, images)`` of the ``count`` most frequent confusions, most first."""
        k = len(self.confusion)
        pairs = [(t, p, int(self.confusion[t, p])) for t in range(k) for p in range(k)
                 if t != p and self.confusion[t, p] > 0]
        return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:count]

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


def num_classes(model: nn.Module) -> int:
    """The classes ``model`` scores (its ``config["num_classes"]``, also through ``torch.compile``), default 10."""
    config = getattr(model, "config", None) or getattr(getattr(model, "_orig_mod", None), "config", None)
    return int(config["num_classes"]) if isinstance(config, dict) and "num_classes" in config else len(CLASSES)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, amp: bool = False, tta: bool = False, *,
             progress: Callable[[int, int], None] | None = None, classes: int | None = None) -> Evaluation:
    """Accuracy, mean loss, confusion matrix and predictions of ``model`` over ``batches``.

    ``progress(done, total)`` is called after each batch is scored (``convzoo.progress``); ``classes``
    is the number of classes the confusion matrix counts (default: the model's, ``num_classes``).

    ``tta`` (test-time augmentation) scores each image by the mean of its logits and those of its
    left-right mirror image, the one transformation training with ``augment`` teaches the model to
    expect: it costs a second forward pass and usually gains a few tenths of a point.

    Under ``torch.distributed`` each rank passes its own contiguous shard of the test set
    (``convzoo.distributed.shard``): the counts and the loss are summed over ranks and the
    predictions gathered in order, so every rank gets the result for the whole set.
    """
    was_training = model.training
    model.eval()
    k = classes or num_classes(model)
    loss_sum = torch.zeros((), device=batches.device)
    confusion = torch.zeros(k * k, dtype=torch.int64, device=batches.device)
    empty = torch.zeros(0, device=batches.device)
    predictions, labels, losses, confidences = [empty.long()], [empty.long()], [empty], [empty]
    for done, (x, y) in enumerate(batches, 1):
        logits = scores(model, x, amp, tta).float()
        loss = nn.functional.cross_entropy(logits, y, reduction="none")
        loss_sum += loss.sum()
        confidence, pred = logits.softmax(dim=1).max(dim=1)
        confusion += torch.bincount(y * k + pred, minlength=k * k)
        predictions.append(pred)
        labels.append(y)
        losses.append(loss)
        confidences.append(confidence)
        if progress is not None:
            progress(done, len(batches))
    model.train(was_training)
    distributed.all_reduce_sum(loss_sum, confusion)
    pred, labels, losses, confidences = (distributed.all_gather_cat(torch.cat(parts)).cpu()
                                         for parts in (predictions, labels, losses, confidences))
    confusion = confusion.view(k, k)
    n = max(len(pred), 1)
    return Evaluation(int(confusion.trace()) / n, float(loss_sum) / n, confusion.cpu().numpy(), pred, labels, losses,
                      confidences)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_data(config: TrainConfig, data_dir: str | None = None, *,
             warn: Callable[[str], None] | None = _warn) -> DataSet:
    """The data set a run of ``config`` trains on, whole (``splits`` applies ``limit_train`` and ``limit_test``).

    ``data_dir`` (default ``config.data_dir``) is where a published set's files are, or where a folder
    given as ``config.data`` is now (moved since the run). ``warn`` gets the data's warnings.
    """
    where = data_dir or config.data_dir
    data, named = config.data, config.data is None or config.data in NAMED
    if not named and where is not None:
        data, where = where, None
    return open_data(data, data_dir=where, grayscale=config.grayscale, size=config.data_size,
                     test_fraction=config.test_fraction, seed=config.seed, warn=warn)


def _first(images: torch.Tensor, labels: torch.Tensor, limit: int | None, data: DataSet,
           seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``limit`` images of a split: the first ones of a published set or IDX folder (as before ``--data``), and of a
    folder of images, which lists them class by class, ``limit`` drawn with ``seed`` (in their order)."""
    if limit is None or limit >= len(labels):
        return images, labels
    if data.split.get("rule") == "official":
        return images[:limit], labels[:limit]
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return images[keep], labels[keep]


def splits(config: TrainConfig, data: DataSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train images, train labels, test images, test labels)`` of ``data`` as a run of ``config`` uses them
    (images uint8 ``(N, C, H, W)``), cut to ``limit_train`` and ``limit_test``."""
    train = _first(data.train_images, data.train_labels, config.limit_train, data, config.seed)
    test = _first(data.test_images, data.test_labels, config.limit_test, data, config.seed + 1)
    return (*train, *test)


def validation_split(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train images, train labels, validation images, validation labels)``: ``config.val_fraction`` of each class
    of the training split held out (at least one image of each class left for training), drawn with the seed, the
    rest kept in their order."""
    held = torch.from_numpy(stratified_split(labels.numpy(), config.val_fraction, config.seed + 2)).bool()
    return images[~held], labels[~held], images[held], labels[held]


def test_split(config: TrainConfig, data_dir: str | None = None, data: DataSet | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels a run with ``config`` is evaluated on: uint8 ``(N, H, W)`` for gray images (as
    before ``--data``), ``(N, 3, H, W)`` for colour ones; int64 ``(N,)``."""
    images, labels = splits(config, data or run_data(config, data_dir, warn=None))[2:]
    return (images[:, 0] if images.shape[1] == 1 else images), labels


def evaluate_model(config: TrainConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   device: torch.device, progress: Callable[[int, int], None] | None = None,
                   classes: int | None = None) -> Evaluation:
    """``model`` scored on ``images`` as the run with ``config`` evaluated (batch size, input size, TTA, autocast);
    ``progress(done, total)`` after each batch."""
    batches = Batches(images, labels, config.eval_batch_size, device=device, resize=config.input_size,
                      channels_last=config.channels_last)
    return evaluate(model, batches, config.amp, config.tta, progress=progress, classes=classes)
