"""Images of the data set titled by their class: a sample of a split, and the test images a run got wrong.

Both draw the images as one mosaic (``base.tile_grid``), in grey from black to white.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ..data import CLASSES
from ..escape import plot_text
from .base import text_width, tile_grid


def samples_figure(
    images: torch.Tensor, labels: Sequence[int] | torch.Tensor, *,
    predictions: Sequence[int] | torch.Tensor | None = None, ncols: int = 10, classes: Sequence[str] = CLASSES,
) -> Figure:
    """A grid of ``images`` ((N, H, W) or (N, 1, H, W), uint8 or float in [0, 1]) titled by class.

    ``classes`` names the labels (default: Fashion-MNIST's).
    With ``predictions`` each title is the predicted class, red with the true class below when wrong.
    """
    images = images.detach().cpu()
    if images.dim() == 4:
        images = images[:, 0]
    n = len(images)
    if n == 0:
        raise ValueError("samples_figure needs at least one image")
    labels = [int(v) for v in labels]
    preds = None if predictions is None else [int(v) for v in predictions]
    vmax = 255 if images.dtype == torch.uint8 else 1.0
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    h, w = images.shape[1:]
    tiles = np.full((nrows * ncols, h, w), np.nan, dtype=np.float32)
    tiles[:n] = images.float().numpy()
    lines = 2 if preds is not None and preds != labels else 1
    title = lines * 0.14 + 0.04  # inches: 8 pt lines above each image
    grid = tile_grid(tiles.reshape(nrows, ncols, h, w), tile_inches=1.15, gap=(title + 0.08, 0.15),
                     margins=(0.05, 0.05, 0.05, title + 0.05), cmap="gray", vmin=0, vmax=vmax)
    for i in range(n):
        r, c = divmod(i, ncols)
        if preds is None or preds[i] == labels[i]:
            grid.above(r, c, plot_text(classes[labels[i]]), fontsize=8)
        else:
            grid.above(r, c, f"{plot_text(classes[preds[i]])}\n({plot_text(classes[labels[i]])})", fontsize=8,
                       color="tab:red")
    return grid.fig


def mistakes_figure(
    images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, *, count: int = 24, ncols: int = 8,
    title: str = "", losses: torch.Tensor | None = None, confidences: torch.Tensor | None = None,
    classes: Sequence[str] = CLASSES,
) -> Figure:
    """``count`` misclassified ``images`` (uint8 ``(N, H, W)``; ``(N, 3, H, W)`` drawn in grey): true class above,
    prediction below, named by ``classes`` (default: Fashion-MNIST's).

    With each image's ``losses`` they are the mistakes of highest loss, highest first (those the network
    was surest of, as fastai's ``plot_top_losses``), else the first ones; with ``confidences``, each
    prediction shows its probability.
    """
    if images.dim() == 4:
        images = images.float().mean(1) if images.shape[1] == 3 else images[:, 0]
    wrong = torch.nonzero(predictions.cpu() != labels.cpu()).flatten()
    if losses is not None:
        wrong = wrong[torch.argsort(losses.cpu()[wrong], descending=True, stable=True)]
    shown = wrong[:count].tolist()
    heading = f"{plot_text(title)}: {len(wrong)} of {len(labels)} test images misclassified"
    if not shown:
        fig = Figure(figsize=(6, 2))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.text(0.5, 0.45, "no mistakes", ha="center", va="center", fontsize=14)
        fig.suptitle(heading, fontsize=10)
        return fig
    which = "by loss, highest first" if losses is not None else "the first"
    heading += f" ({which} {len(shown)})" if len(shown) < len(wrong) else f" ({which})" if losses is not None else ""
    ncols = min(ncols, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    h, w = images.shape[1:]
    tiles = np.full((nrows * ncols, h, w), np.nan, dtype=np.float32)
    tiles[: len(shown)] = images[shown].cpu().numpy()
    # Inches: a 7.5 pt line above (true class) and below (prediction) every image, the heading on top.
    grid = tile_grid(
        tiles.reshape(nrows, ncols, h, w), tile_inches=1.35, gap=(0.44, 0.1), margins=(0.05, 0.22, 0.05, 0.55),
        cmap="gray", vmin=0, vmax=255, min_size=(text_width(heading, 10) + 0.3, 0.0),
    )
    for n, i in enumerate(shown):
        r, c = divmod(n, ncols)
        grid.above(r, c, f"true: {plot_text(classes[int(labels[i])])}", fontsize=7.5, pad=3)
        sure = f" {float(confidences[i]):.0%}" if confidences is not None else ""
        grid.below(r, c, f"pred: {plot_text(classes[int(predictions[i])])}{sure}", fontsize=7.5, pad=3,
                   color="tab:red")
    grid.fig.suptitle(heading, fontsize=10, y=1 - 0.1 / grid.fig.get_figheight())
    return grid.fig
