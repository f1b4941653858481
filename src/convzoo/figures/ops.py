"""The worked examples of the chapter's start: ``corr2d`` of a 3x3 input, then padding and stride.

Every number drawn is computed by ``convzoo.ops``, so the picture cannot disagree with the code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import ops

WINDOW_COLOURS = ("tab:orange", "tab:green", "tab:purple", "tab:blue")


def _grid(
    ax: Axes, values: np.ndarray, x0: float, y0: float, *, label: str, padding: int = 0,
    outlines: Sequence[tuple[int, int, int, int, str]] = (), fills: Mapping[tuple[int, int], object] | None = None,
) -> None:
    """Draw ``values`` as numbered cells with the top-left corner at ``(x0, y0)`` (y grows downwards).

    The outer ``padding`` rings are grey; ``outlines`` are ``(row, col, height, width, colour)``
    rectangles; ``fills`` colour single cells.
    """
    h, w = values.shape
    for i in range(h):
        for j in range(w):
            pad = i < padding or j < padding or i >= h - padding or j >= w - padding
            face = (fills or {}).get((i, j), "#d9d9d9" if pad else "white")
            ax.add_patch(Rectangle((x0 + j, y0 + i), 1, 1, facecolor=face, edgecolor="#444444", lw=1))
            ax.text(x0 + j + 0.5, y0 + i + 0.5, f"{values[i, j]:g}", ha="center", va="center", fontsize=12,
                    color="#777777" if pad else "black")
    for i, j, oh, ow, colour in outlines:
        inset = 0.06
        ax.add_patch(Rectangle((x0 + j + inset, y0 + i + inset), ow - 2 * inset, oh - 2 * inset, fill=False,
                               edgecolor=colour, lw=3))
    ax.text(x0 + w / 2, y0 - 0.35, label, ha="center", va="bottom", fontsize=10)


def _sum_text(window: np.ndarray, kernel: np.ndarray, value: float) -> str:
    terms = " + ".join(f"{x:g}\u00d7{k:g}" for x, k in zip(window.flat, kernel.flat))
    return f"{terms} = {value:g}"


def ops_figure() -> Figure:
    """The chapter's examples: ``corr2d`` of ``[[0..8]]`` with ``[[0, 1], [2, 3]]``, then padding 1 and stride 2.

    Every number drawn is computed by ``convzoo.ops`` (``corr2d``, ``conv2d``, ``conv2d_output_size``).
    """
    X = torch.arange(9.0).reshape(3, 3)
    K = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    Y = ops.corr2d(X, K).numpy()
    x, k = X.numpy(), K.numpy()

    fig = Figure(figsize=(12, 8.6), layout="constrained")
    ax_corr, ax_pad = fig.subplots(2, 1, height_ratios=[1, 1.35])
    for ax in (ax_corr, ax_pad):
        ax.set_axis_off()
        ax.set_aspect("equal")

    # Cross-correlation: the window of the first output outlined, every output's sum written out.
    colours = {(i, j): WINDOW_COLOURS[2 * i + j] for i in range(2) for j in range(2)}
    _grid(ax_corr, x, 0, 0, label="input X (3\u00d73)", outlines=[(0, 0, 2, 2, colours[0, 0])])
    ax_corr.text(3.6, 1.5, "\u22c6", fontsize=34, ha="center", va="center")
    _grid(ax_corr, k, 4.2, 0.5, label="kernel K (2\u00d72)")
    ax_corr.text(6.8, 1.5, "=", fontsize=22, ha="center", va="center")
    _grid(ax_corr, Y, 7.4, 0.5, label="output Y = corr2d(X, K)",
          fills={key: to_rgba(c, 0.25) for key, c in colours.items()})
    for n, ((i, j), colour) in enumerate(colours.items()):
        ax_corr.text(10.2, 0.45 + 0.75 * n, _sum_text(x[i:i + 2, j:j + 2], k, Y[i, j]), fontsize=12,
                     va="center", color=colour, family="monospace")
    ax_corr.set_xlim(-0.2, 20)
    ax_corr.set_ylim(3.4, -1.2)
    ax_corr.set_title("cross-correlation: slide the kernel over the input, multiply and add", fontsize=12)

    # Padding 1 and stride 2: the padded input, the window of every output in its colour.
    padding, stride = 1, 2
    padded = np.pad(x, padding)
    out = ops.conv2d(X[None, None], K[None, None], padding=padding, stride=stride)[0, 0].numpy()
    side = ops.conv2d_output_size(3, 2, stride, padding)[0]
    windows = {(i, j): (stride * i, stride * j) for i in range(side) for j in range(side)}
    outlines = [(r, c, 2, 2, colours[key]) for key, (r, c) in windows.items()]
    _grid(ax_pad, padded, 0, 0, label="input with padding 1 (grey: zeros)", padding=padding, outlines=outlines)
    ax_pad.text(5.6, 2.5, "\u22c6", fontsize=34, ha="center", va="center")
    _grid(ax_pad, k, 6.2, 1.5, label="kernel K")
    ax_pad.text(8.8, 2.5, "=", fontsize=22, ha="center", va="center")
    _grid(ax_pad, out, 9.4, 1.5, label="output (stride 2)",
          fills={key: to_rgba(c, 0.25) for key, c in colours.items()})
    for n, (key, (r, c)) in enumerate(windows.items()):
        ax_pad.text(12.2, 1.2 + 0.75 * n, _sum_text(padded[r:r + 2, c:c + 2], k, out[key]), fontsize=12,
                    va="center", color=colours[key], family="monospace")
    ax_pad.text(12.2, 4.6, f"output side = \u230a(n + 2p \u2212 k) / s\u230b + 1\n"
                f"            = \u230a(3 + 2\u00b7{padding} \u2212 2) / {stride}\u230b + 1 = {side}",
                fontsize=12, va="center", family="monospace")
    ax_pad.set_xlim(-0.2, 20)
    ax_pad.set_ylim(5.6, -1.2)
    ax_pad.set_title(f"padding {padding}, stride {stride}: the window jumps {stride} cells; "
                     "each coloured window gives the output cell of its colour", fontsize=12)
    return fig
