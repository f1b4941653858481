"""Every matplotlib figure of convzoo. Figures read no files: they take numbers, tensors and
models and return a ``matplotlib.figure.Figure``; ``save_figure`` writes one as a PNG.

    base.py       DPI, ``figure_png``, ``save_figure``; layout by the inch: ``place_axes``, ``tile_grid``
    training.py   ``curves_figure`` (one run), ``confusion_figure``, ``runs_figure`` (several runs),
                  ``live_curves_figure`` (a run in progress, for a notebook)
    model.py      ``kernels_figure``, ``layer_kernels_figure``, ``features_figure``
    samples.py    ``samples_figure`` (a split's images), ``mistakes_figure`` (a run's wrong predictions)
    ops.py        ``ops_figure``: corr2d, padding and stride worked out

``convzoo.show`` draws these for a run directory.
"""

from .base import DPI, figure_png, save_figure
from .model import FEATURE_CMAP, KERNEL_CMAP, conv_layers, features_figure, kernels_figure, layer_kernels_figure
from .ops import ops_figure
from .samples import mistakes_figure, samples_figure
from .training import confusion_figure, curves_figure, live_curves_figure, runs_figure

__all__ = [
    "DPI", "FEATURE_CMAP", "KERNEL_CMAP", "confusion_figure", "conv_layers", "curves_figure", "features_figure",
    "figure_png", "kernels_figure", "layer_kernels_figure", "live_curves_figure", "mistakes_figure", "ops_figure",
    "runs_figure", "samples_figure", "save_figure",
]
