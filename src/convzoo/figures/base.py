"""What every figure shares: one DPI, rendering and saving, and laying out by the inch.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot's: pyplot's global state and the
backend are left alone (a notebook that imports convzoo keeps its own), and ``figure_png`` is the
one place that renders, with Agg. Figures are saved without a tight bounding box, so a PNG is
exactly ``figsize x DPI`` pixels.

``tile_grid`` draws many small images as one mosaic on one Axes, with text placed next to any
tile: one image to draw instead of one Axes per tile, many times faster.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text

from ..fileio import write_bytes

DPI = 100  # pixels per inch of every PNG


def figure_png(fig: Figure) -> bytes:
    """``fig`` rendered by Agg as PNG bytes, ``figsize x DPI`` pixels."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_figure(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically; returns ``path``."""
    return write_bytes(path, figure_png(fig))


def place_axes(fig: Figure, left: float, bottom: float, width: float, height: float, **kwargs) -> Axes:
    """An Axes at a position given in inches from the figure's lower-left corner."""
    fig_w, fig_h = fig.get_size_inches()
    return fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h), **kwargs)


def text_width(text: str, fontsize: float) -> float:
    """A generous estimate of the width in inches of one line of ``text`` in the default sans-serif font."""
    return len(text) * fontsize * 0.62 / 72


# --- grids of images --------------------------------------------------------------------------

def mosaic(tiles: np.ndarray, gap: tuple[int, int], scale: int = 1) -> np.ndarray:
    """Tiles ``(rows, cols, h, w)`` as one float32 image, row-major, ``gap`` ``(y, x)`` pixels apart.

    Each tile pixel becomes ``scale x scale`` pixels, so the image is ``(rows * (scale*h + gap_y) - gap_y,
    cols * (scale*w + gap_x) - gap_x)``. The gaps are NaN, which a colormap draws transparent.
    """
    rows, cols, h, w = tiles.shape
    h, w = h * scale, w * scale
    gap_y, gap_x = gap
    out = np.full((rows * (h + gap_y) - gap_y, cols * (w + gap_x) - gap_x), np.nan, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            tile = tiles[r, c]
            if scale > 1:
                tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
            out[r * (h + gap_y): r * (h + gap_y) + h, c * (w + gap_x): c * (w + gap_x) + w] = tile
    return out


@dataclass
class TileGrid:
    """A figure whose one Axes ``ax`` shows a grid of tiles as one mosaic ``image``.

    The Axes' data coordinates are the mosaic's pixels (x to the right, y downwards); ``above``,
    ``below`` and ``left`` put text next to a tile, ``pad`` points away from it.
    """

    fig: Figure
    ax: Axes
    image: AxesImage
    box: tuple[float, float, float, float]  # the Axes' (left, bottom, width, height) in inches
    tile: tuple[int, int]  # (height, width) of a tile in mosaic pixels
    pitch: tuple[int, int]  # (y, x) mosaic pixels from one tile's corner to the next one's
    points: float  # mosaic pixels per typographic point

    def _x(self, col: int) -> float:
        return col * self.pitch[1] + self.tile[1] / 2 - 0.5

    def above(self, row: int, col: int, text: str, *, pad: float = 2, **kwargs) -> Text:
        """``text`` centred above tile ``(row, col)``."""
        y = row * self.pitch[0] - 0.5 - pad * self.points
        return self.ax.text(self._x(col), y, text, ha="center", va="bottom", **kwargs)

    def below(self, row: int, col: int, text: str, *, pad: float = 2, **kwargs) -> Text:
        """``text`` centred below tile ``(row, col)``."""
        y = row * self.pitch[0] + self.tile[0] - 0.5 + pad * self.points
        return self.ax.text(self._x(col), y, text, ha="center", va="top", **kwargs)

    def left(self, row: int, text: str, *, pad: float = 3, **kwargs) -> Text:
        """``text`` right-aligned to the left of row ``row``."""
        y = row * self.pitch[0] + self.tile[0] / 2 - 0.5
        return self.ax.text(-0.5 - pad * self.points, y, text, ha="right", va="center", **kwargs)


def tile_grid(
    tiles: np.ndarray, *, tile_inches: float, gap: tuple[float, float], margins: tuple[float, float, float, float],
    cmap: str, vmin: float, vmax: float, min_size: tuple[float, float] = (0.0, 0.0), frame: str | None = None,
) -> TileGrid:
    """A figure showing ``tiles`` ``(rows, cols, h, w)`` as one mosaic image on one Axes; NaN tiles are blank.

    ``tile_inches`` is a tile's longer side, ``gap`` the ``(vertical, horizontal)`` space between
    tiles (where per-tile titles go) and ``margins`` the ``(left, bottom, right, top)`` space around
    the mosaic, all in inches; the figure is made at least ``min_size`` ``(width, height)``, the
    mosaic centred in the extra space. With a ``frame`` colour every tile that is not blank gets an
    outline, as an Axes' spines would draw it. Small tiles are enlarged by whole pixels (drawn with
    ``interpolation="nearest"``, they look the same) so that the gaps, whole mosaic pixels, can be narrow.
    """
    rows, cols, h, w = tiles.shape
    scale = max(1, math.ceil(32 / max(h, w)))  # a tile of 32 mosaic pixels or more
    inch = tile_inches / (scale * max(h, w))  # inches per mosaic pixel
    gap_px = (max(1, round(gap[0] / inch)), max(1, round(gap[1] / inch)))
    image = mosaic(tiles, gap_px, scale)
    width, height = image.shape[1] * inch, image.shape[0] * inch
    left, bottom, right, top = margins
    # A whole number of pixels at DPI, so that the PNG is exactly figsize x DPI pixels.
    fig_w = math.ceil(max(min_size[0], left + width + right) * DPI - 1e-6) / DPI
    fig_h = math.ceil(max(min_size[1], bottom + height + top) * DPI - 1e-6) / DPI
    extra_x, extra_y = (fig_w - (left + width + right)) / 2, (fig_h - (bottom + height + top)) / 2
    fig = Figure(figsize=(fig_w, fig_h))
    box = (left + extra_x, bottom + extra_y, width, height)
    ax = place_axes(fig, *box)
    ax.set_axis_off()
    drawn = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    tile = (h * scale, w * scale)
    pitch = (tile[0] + gap_px[0], tile[1] + gap_px[1])
    if frame is not None:
        corners = [(c * pitch[1] - 0.5, r * pitch[0] - 0.5) for r in range(rows) for c in range(cols)
                   if not np.isnan(tiles[r, c]).all()]
        outlines = [[(x, y), (x + tile[1], y), (x + tile[1], y + tile[0]), (x, y + tile[0])] for x, y in corners]
        ax.add_collection(PolyCollection(outlines, facecolors="none", edgecolors=frame, linewidths=0.8,
                                         clip_on=False),
                          autolim=False)
    return TileGrid(fig, ax, drawn, box, tile, pitch, points=1 / 72 / inch)


