"""How training went: one run's curves, its confusion matrix, and several runs' curves overlaid.

Each function takes the numbers (``metrics.jsonl`` rows, a confusion matrix) and returns a Figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..checkpoint import SHORT, epoch_score
from ..escape import plot_label, plot_text
from .base import place_axes


def curves_figure(history: Sequence[dict], *, title: str = "") -> Figure:
    """The book's training plot: train loss, train accuracy and test accuracy per epoch (``metrics.jsonl`` rows;
    the validation accuracy for a run that holds a validation split out).

    The loss (no upper bound) is on the left axis, the accuracies (0 to 1) on a labelled right one;
    one legend names all three lines.
    """
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(5.5, 4.07))
    ax = place_axes(fig, 0.6, 0.5, 4.2, 3.2)
    acc_ax = ax.twinx()
    lines = ax.plot(epochs, [row["train_loss"] for row in history], "-o", ms=3, label="train loss")
    lines += acc_ax.plot(epochs, [row["train_acc"] for row in history], "--o", ms=3, color="tab:orange",
                         label="train acc")
    scored_on = epoch_score(history[0])[0] if history else "test"
    lines += acc_ax.plot(epochs, [epoch_score(row)[1] for row in history], "-.o", ms=3, color="tab:green",
                         label=f"{SHORT[scored_on]} acc")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlim(0.5, max(epochs, default=1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs: no 0.5 ticks
    ax.grid(alpha=0.3)
    ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    ax.set_title(plot_text(title))
    return fig


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], *, title: str = "") -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), counts in the cells, a colour bar."""
    matrix = np.asarray(matrix)
    # Inches: room for the class names on the left and (at 45 degrees) below, the title above,
    # and the colour bar with its tick labels on the right of a square matrix.
    side, left, bottom, top, bar = 5.4, 1.3, 1.2, 0.44, 0.22
    fig = Figure(figsize=(left + side + 0.26 + bar + 0.96, bottom + side + top))
    ax = place_axes(fig, left, bottom, side, side)
    cax = place_axes(fig, left + side + 0.26, bottom, bar, side)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, cax=cax, label="test images")
    ticks = np.arange(len(classes))
    names = [plot_text(name) for name in classes]
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_title(plot_text(title) if title else "confusion matrix")
    return fig


def runs_figure(histories: Mapping[str, Sequence[dict]], *, title: str = "") -> Figure:
    """Train loss and test accuracy per epoch of several runs (``{label: metrics rows}``), a colour per run (the
    validation accuracy of runs that hold a validation split out)."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    last = max((r["epoch"] for rows in histories.values() for r in rows), default=1)
    for label, rows in histories.items():
        epochs = [r["epoch"] for r in rows]
        (line,) = ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-o", ms=3, label=plot_label(label))
        ax_acc.plot(epochs, [epoch_score(r)[1] for r in rows], "-o", ms=3, color=line.get_color())
    scored_on = {epoch_score(r)[0] for rows in histories.values() for r in rows} or {"test"}
    held_out = f"{scored_on.pop()} accuracy" if len(scored_on) == 1 else "test or validation accuracy"
    for ax, name in ((ax_loss, "train loss"), (ax_acc, held_out)):
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.legend(loc="outside lower center", ncols=min(len(histories), 4), fontsize=8)
    fig.suptitle(plot_text(title) if title else "runs compared", fontsize=11)
    return fig


def live_curves_figure(train: Sequence[tuple[float, float, float]], test: Sequence[tuple[int, float]], epochs: int,
                       *, title: str = "", scored_on: str = "test") -> Figure:
    """The book's ``Animator`` plot of a run in progress, drawn again as it trains.

    ``train`` holds ``(epoch, loss, accuracy)`` points at fractions of an epoch (the running means
    of the epoch so far), ``test`` ``(epoch, accuracy)`` at the end of each epoch (on the test set, or the
    validation split: ``scored_on``); the x axis spans
    all ``epochs`` from the start, so that the curves grow into it.
    """
    fig = Figure(figsize=(5.5, 3.6))
    ax = place_axes(fig, 0.55, 0.5, 4.8, 2.75)
    if train:
        at, loss, acc = zip(*train)
        ax.plot(at, loss, "-", label="train loss")
        ax.plot(at, acc, "--", label="train acc")
    if test:
        ax.plot(*zip(*test), "-.o", ms=3, label=f"{SHORT[scored_on]} acc")
    ax.set_xlabel("epoch")
    ax.set_xlim(0, max(epochs, 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    if train or test:
        ax.legend(loc="best", fontsize=8)
    ax.set_title(plot_text(title), fontsize=10)
    return fig
