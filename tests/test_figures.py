"""convzoo.figures: the figures drawn from tensors, models and histories (mosaics, kernels, feature maps,
mistakes, a sample of the data set, the worked ops examples), and how they are rendered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import same_color
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text

from convzoo import figures
from convzoo.checkpoint import load_model
from convzoo.data import CLASSES, load_split, to_input
from convzoo.figures.base import tile_grid

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


def mosaic_of(fig: Figure) -> tuple[Axes, AxesImage]:
    """The one Axes of ``fig`` that shows an image (the mosaic), and that image."""
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 1 and len(shown[0].images) == 1
    return shown[0], shown[0].images[0]


def tiles_of(image: AxesImage, rows: int, cols: int, h: int, w: int) -> np.ndarray:
    """The ``(rows, cols, h, w)`` tiles a mosaic shows: the blank lines between tiles dropped, enlarged pixels
    taken once."""
    pixels = np.ma.filled(np.ma.asarray(image.get_array(), dtype=np.float64), np.nan)
    pixels = pixels[~np.isnan(pixels).all(axis=1)][:, ~np.isnan(pixels).all(axis=0)]
    scale = pixels.shape[0] // (rows * h)
    assert pixels.shape == (rows * h * scale, cols * w * scale)
    return pixels.reshape(rows, h * scale, cols, w * scale).transpose(0, 2, 1, 3)[:, :, ::scale, ::scale]


def texts_of(ax: Axes) -> dict[str, Text]:
    return {t.get_text(): t for t in ax.texts}


def assert_texts_apart(fig: Figure) -> None:
    """Every text of ``fig`` is drawn inside the figure and overlaps no other text."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    texts = [t for t in fig.findobj(Text) if t.get_text() and t.get_visible()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for text, box in zip(texts, boxes):
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1), text.get_text()
    for i, (a, box_a) in enumerate(zip(texts, boxes)):
        for b, box_b in zip(texts[i + 1:], boxes[i + 1:]):
            assert not box_a.overlaps(box_b), (a.get_text(), b.get_text())


def test_tile_grid_is_one_mosaic_with_titles_over_their_tiles() -> None:
    tiles = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    tiles[1, 2] = np.nan  # a blank tile
    grid = tile_grid(tiles, tile_inches=1.0, gap=(0.3, 0.1), margins=(0.6, 0.1, 0.1, 0.3), cmap="gray",
                     vmin=0, vmax=120, frame="black")
    for r in range(2):
        grid.left(r, f"row {r}")
        for c in range(3):
            grid.above(r, c, f"{r},{c}")
    ax, image = mosaic_of(grid.fig)
    assert grid.fig.axes == [ax] and image.get_clim() == (0, 120)
    np.testing.assert_array_equal(tiles_of(image, 2, 3, 4, 5), tiles)
    assert_texts_apart(grid.fig)
    # Each title is centred over its tile, above it; each row label left of the mosaic, level with its row.
    renderer = FigureCanvasAgg(grid.fig).get_renderer()
    text = texts_of(ax)
    for r in range(2):
        for c in range(3):
            title = text[f"{r},{c}"].get_window_extent(renderer)
            x0, y_top = ax.transData.transform((c * grid.pitch[1] - 0.5, r * grid.pitch[0] - 0.5))
            x1, _ = ax.transData.transform((c * grid.pitch[1] + grid.tile[1] - 0.5, 0))
            assert title.x0 > x0 - 1 and title.x1 < x1 + 1 and 0 <= title.y0 - y_top < 6
        label = text[f"row {r}"].get_window_extent(renderer)
        _, y_middle = ax.transData.transform((0, r * grid.pitch[0] + grid.tile[0] / 2 - 0.5))
        assert label.x1 < ax.bbox.x0 and label.y0 < y_middle < label.y1
    assert len(ax.collections[0].get_paths()) == 5  # frames round the tiles that are not blank


def test_kernel_tiles_are_the_weights_on_one_scale_centred_at_zero() -> None:
    torch.manual_seed(0)
    weight = torch.randn(16, 6, 5, 5)
    fig = figures.kernels_figure(weight, title="t")
    ax, image = mosaic_of(fig)
    # One tile per (input, output) pair: a row per input channel, a column per output channel.
    np.testing.assert_allclose(tiles_of(image, 6, 16, 5, 5), weight.transpose(0, 1).numpy(), rtol=1e-6)
    limit = float(weight.abs().max())
    assert image.get_clim() == pytest.approx((-limit, limit))
    assert image.get_cmap().name == figures.KERNEL_CMAP
    assert image.colorbar is not None and image.colorbar.ax in fig.axes
    labels = [t.get_text() for t in ax.texts]
    assert labels == [str(c) for c in range(16)] + [str(r) for r in range(6)]  # output columns, input rows
    assert_texts_apart(fig)


def test_many_input_channels_are_averaged_per_output() -> None:
    weight = torch.randn(100, 64, 3, 3)
    fig = figures.kernels_figure(weight, title="many")
    ax, image = mosaic_of(fig)
    tiles = tiles_of(image, 8, 8, 3, 3).reshape(64, 3, 3)  # capped at 2 x max_outputs, 8 to a row
    np.testing.assert_allclose(tiles, weight[:64].mean(1).numpy(), rtol=1e-5, atol=1e-6)
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(64)]  # tile number = output channel
    assert "mean over 64 input channels" in fig.get_suptitle() and "first 64 of 100" in fig.get_suptitle()
    assert_texts_apart(fig)


def test_feature_maps_are_the_conv_outputs(run: Path) -> None:
    model = load_model(run / "model.safetensors")
    image = load_split("test", SLICE)[0][3]
    fig = figures.features_figure(model, image, 28, channels=8)
    rows = fig.subfigs[1:]
    assert len(rows) == len(figures.conv_layers(model)) == 2
    first = [ax.images[0] for ax in rows[0].axes if ax.images and ax.images[0].get_cmap().name == figures.FEATURE_CMAP]
    assert len(first) == 6  # LeNet's first conv has 6 channels, fewer than the 8 asked for
    with torch.no_grad():
        expected = model[0](to_input(image[None], 28))[0]
    np.testing.assert_allclose(first[2].get_array(), expected[2].numpy(), rtol=1e-5, atol=1e-6)
    assert "output 16\u00d710\u00d710" in rows[1].get_suptitle()


def test_mistakes_show_true_and_predicted_classes() -> None:
    images = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8)
    labels = torch.arange(30) % 10
    predictions = labels.clone()
    predictions[[3, 7, 20]] = (labels[[3, 7, 20]] + 1) % 10
    fig = figures.mistakes_figure(images, labels, predictions, title="m")
    ax, image = mosaic_of(fig)
    np.testing.assert_array_equal(tiles_of(image, 1, 3, 28, 28)[0], images[[3, 7, 20]].numpy())
    assert image.get_clim() == (0, 255) and image.get_cmap().name == "gray"
    renderer = FigureCanvasAgg(fig).get_renderer()
    # In tile order: the true class above the row of images, the prediction in red below it, the same x.
    true, pred = ax.texts[0::2], ax.texts[1::2]
    assert [t.get_text() for t in true] == [f"true: {CLASSES[int(labels[i])]}" for i in (3, 7, 20)]
    assert [t.get_text() for t in pred] == [f"pred: {CLASSES[int(predictions[i])]}" for i in (3, 7, 20)]
    assert [t.get_position()[0] for t in true] == [t.get_position()[0] for t in pred]
    assert sorted(t.get_position()[0] for t in true) == [t.get_position()[0] for t in true]
    assert all(same_color(t.get_color(), "tab:red") for t in pred) and not same_color(true[0].get_color(), "tab:red")
    assert all(t.get_window_extent(renderer).y0 >= ax.bbox.y1 for t in true)
    assert all(t.get_window_extent(renderer).y1 <= ax.bbox.y0 for t in pred)
    assert "3 of 30" in fig.get_suptitle()
    assert_texts_apart(fig)
    assert_texts_apart(figures.mistakes_figure(images, labels, (labels + 1) % 10, title="a longer title"))
    assert "no mistakes" in figures.mistakes_figure(images, labels, labels).axes[0].texts[0].get_text()


def test_ops_figure_is_computed_with_convzoo_ops() -> None:
    texts = {t.get_text() for ax in figures.ops_figure().axes for t in ax.texts}
    assert {"0\u00d70 + 1\u00d71 + 3\u00d72 + 4\u00d73 = 19", "4\u00d70 + 5\u00d71 + 7\u00d72 + 8\u00d73 = 43"} <= texts
    # Padding 1, stride 2: windows at (0, 0), (0, 2), (2, 0), (2, 2) of the padded input.
    assert {"0\u00d70 + 0\u00d71 + 1\u00d72 + 2\u00d73 = 8", "0\u00d70 + 3\u00d71 + 0\u00d72 + 6\u00d73 = 21"} <= texts
    assert {"19", "25", "37", "43", "21"} <= texts



def test_samples_figure_saved_as_png(tmp_path):
    images, labels = load_split("test", SLICE)
    out = tmp_path / "out" / "grid.png"
    fig = figures.samples_figure(images[:12], labels[:12], predictions=labels[:12].flip(0), ncols=5)
    path = figures.save_figure(fig, out)
    content = path.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 10_000
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    with PIL.Image.open(path) as png:
        assert png.format == "PNG" and png.width > 400 and png.height > 200


def test_importing_and_drawing_leave_matplotlibs_backend_alone(tmp_path):
    """A notebook that imports convzoo keeps its backend; figures still render to PNG, with Agg."""
    script = (
        "import matplotlib; matplotlib.use('svg'); import sys\n"
        "import convzoo.figures, convzoo.show, convzoo.report\n"
        "png = convzoo.figures.figure_png(convzoo.figures.ops_figure())\n"
        "assert png.startswith(b'\\x89PNG'), png[:8]\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
