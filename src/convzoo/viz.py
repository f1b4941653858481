"""Pictures of what a network learned and of the operations it is built from (matplotlib, Agg, PNG).

Each picture has a builder that returns a ``matplotlib.figure.Figure`` from tensors (pyplot's
global state is never touched) and a ``show_*`` function that draws it for a run directory:

    show_kernels(run_dir)            kernels.png    learned kernels of one conv layer
    show_features(run_dir, image)    features.png   feature maps after the conv layers, one image
    show_mistakes(run_dir)           mistakes.png   misclassified test images, true and predicted class
    show_confusion(run_dir)          confusion.png  the confusion matrix, as ``convzoo eval`` draws it
    show_curves([run_dir, ...], out)                several runs' train loss and test accuracy
    show_ops(out)                                   the seed's worked examples of corr2d, padding, stride

Pictures of a run go into the run directory unless ``out`` says otherwise. Figures are saved
without a tight bounding box, so a PNG is exactly ``figsize x DPI`` pixels.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from torch import nn  # noqa: E402

from . import ops  # noqa: E402
from .data import CLASSES, load_split, to_input  # noqa: E402
from .errors import RunFileError  # noqa: E402
from .evaluate import Evaluation  # noqa: E402
from .fileio import atomic_path  # noqa: E402
from .images import load_image  # noqa: E402
from .plots import place_axes, plot_confusion, text_width, tile_grid  # noqa: E402
from .rundir import evaluate_run, load_run, read_run_config  # noqa: E402

DPI = 100
KERNEL_CMAP = "RdBu_r"  # diverging: negative weights blue, positive red, zero white
FEATURE_CMAP = "viridis"


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes, ``figsize x DPI`` pixels."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(figure_png(fig))
    return path


# --- kernels ----------------------------------------------------------------------------------

def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every ``nn.Conv2d`` of ``model`` (from-scratch ones included) by qualified name, in definition order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}


def _conv_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Conv2d]:
    convs = conv_layers(model)
    if not convs:
        raise RunFileError(f"{model.config['name']} has no convolution layer")
    if layer is None:
        return next(iter(convs.items()))
    if layer not in convs:
        names = list(convs)
        listed = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise RunFileError(f"no conv layer named {layer!r} in {model.config['name']}; its conv layers: {listed}")
    return layer, convs[layer]


def _describe(name: str, conv: nn.Conv2d) -> str:
    kh, kw = conv.kernel_size
    return f"layer {name} (Conv2d {conv.in_channels}\u2192{conv.out_channels}, {kh}\u00d7{kw})"


def kernels_figure(weight: torch.Tensor, *, title: str = "", max_inputs: int = 8, max_outputs: int = 32) -> Figure:
    """Kernels ``(C_out, C_in, kh, kw)`` as a grid of tiles on one diverging colour scale centred at 0.

    With 2 to ``max_inputs`` input channels there is one tile per (input, output) pair, a row per
    input channel; otherwise one tile per output channel, averaged over the input channels. At most
    ``max_outputs`` output channels are drawn (the first ones). The tiles are one mosaic image
    (``plots.tile_grid``) with a colour bar.
    """
    w = weight.detach().float().cpu()
    c_out, c_in, kh, kw = w.shape
    pairs = 1 < c_in <= max_inputs
    shown = min(c_out, max_outputs if pairs else 2 * max_outputs)
    if pairs:
        tiles = w[:shown].transpose(0, 1)  # (C_in, shown, kh, kw): a row per input channel
        rows, cols = c_in, shown
        note = ""
    else:
        cols = min(shown, 8)
        rows = math.ceil(shown / cols)
        tiles = torch.full((rows * cols, kh, kw), float("nan"))
        tiles[:shown] = w[:shown].mean(dim=1)
        tiles = tiles.view(rows, cols, kh, kw)
        note = f"mean over {c_in} input channels" if c_in > 1 else ""
    if shown < c_out:
        note = ", ".join(filter(None, [note, f"first {shown} of {c_out} output channels"]))
    tiles = tiles.numpy()
    limit = float(np.nanmax(np.abs(tiles))) or 1.0
    heading = title + (f"\n({note})" if note else "")

    # Inches. Tile numbers (7 pt) go above every tile, or above the first row and left of each row
    # for (input, output) pairs; the axis labels (9 pt) below and on the left; the colour bar right.
    label = 0.16
    top = 0.12 + 0.2 * (heading.count("\n") + 1) + label
    grid = tile_grid(
        tiles, tile_inches=(0.75 if cols <= 8 else 0.55) if max(kh, kw) > 1 else 0.4,
        gap=(0.08 if pairs else 0.08 + label, 0.08), margins=(0.5 if pairs else 0.2, 0.35, 1.25, top),
        cmap=KERNEL_CMAP, vmin=-limit, vmax=limit, frame="black",
        min_size=(max(4.8, *(text_width(line, 10) + 0.3 for line in heading.splitlines())), 0.35 + 1.5 + top),
    )
    if pairs:
        for c in range(cols):
            grid.above(0, c, str(c), fontsize=7)
        for r in range(rows):
            grid.left(r, str(r), fontsize=7)
    else:
        for n in range(shown):
            grid.above(*divmod(n, cols), str(n), fontsize=7)
    fig = grid.fig
    fig_w, fig_h = fig.get_size_inches()
    left, bottom, width, height = grid.box
    bar = max(1.5, height * min(1.0, 3.0 / rows + 0.3))
    fig.colorbar(grid.image, cax=place_axes(fig, left + width + 0.25, bottom + (height - bar) / 2, 0.15, bar),
                 label="weight")
    fig.supxlabel("output channel" if pairs else "tile number = output channel", fontsize=9, y=0.06 / fig_h)
    if pairs:
        fig.supylabel("input channel", fontsize=9, x=0.06 / fig_w)
    fig.suptitle(heading, fontsize=10, y=1 - 0.1 / fig_h)
    return fig


def layer_kernels_figure(model: nn.Module, layer: str | None = None) -> Figure:
    """``kernels_figure`` of ``model``'s conv layer named ``layer`` (default: the first), titled with its shape."""
    name, conv = _conv_layer(model, layer)
    return kernels_figure(conv.weight, title=f"{model.config['name']}: kernels of {_describe(name, conv)}")


# --- feature maps -----------------------------------------------------------------------------

@torch.no_grad()
def features_figure(
    model: nn.Module, image: torch.Tensor, input_size: int, *, channels: int = 8, max_layers: int = 10,
    title: str = "",
) -> Figure:
    """Feature maps for one uint8 ``(H, W)`` image: the first ``channels`` outputs of each conv layer.

    A forward hook on every ``nn.Conv2d`` records its output (before the activation). Networks with
    more than ``max_layers`` conv layers show that many, evenly spaced from the first to the last.
    Each row shares one colour scale, with its colour bar.
    """
    convs = conv_layers(model)
    outputs: dict[str, torch.Tensor] = {}

    def record(name: str):
        return lambda _module, _args, out: outputs.__setitem__(name, out[0].float().cpu())

    handles = [conv.register_forward_hook(record(name)) for name, conv in convs.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        probs = torch.softmax(model(to_input(image[None].to(device), input_size)).float(), dim=1)[0].cpu()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    names = list(convs)
    if len(names) > max_layers:
        picks = sorted(set(np.linspace(0, len(names) - 1, max_layers).round().astype(int).tolist()))
        names = [names[i] for i in picks]

    fig = Figure(figsize=(channels * 1.05 + 1.5, 1.45 * (len(names) + 1) + 0.5), layout="constrained")
    top, *rows = fig.subfigures(len(names) + 1, 1)
    ax_in, ax_text = top.subplots(1, 2, width_ratios=[1, channels - 1])
    ax_in.imshow(image.cpu().numpy(), cmap="gray", vmin=0, vmax=255)
    ax_in.set_axis_off()
    h, w = image.shape
    resized = f"\nresized to {input_size}\u00d7{input_size}" if (h, w) != (input_size, input_size) else ""
    ax_in.set_title(f"input {h}\u00d7{w}{resized}", fontsize=8)
    best = probs.topk(3)
    lines = [f"{CLASSES[int(i)]}: {float(p):.1%}" for p, i in zip(best.values, best.indices)]
    ax_text.set_axis_off()
    ax_text.text(0.02, 0.5, "network's top classes\n" + "\n".join(lines), va="center", fontsize=9)
    for sub, name in zip(rows, names):
        maps = outputs[name][:channels].numpy()
        conv = convs[name]
        axes = sub.subplots(1, channels, squeeze=False)[0]
        low, high = float(maps.min()), float(maps.max())
        image_artist = None
        for c, ax in enumerate(axes):
            ax.set_axis_off()
            if c < len(maps):
                image_artist = ax.imshow(maps[c], cmap=FEATURE_CMAP, vmin=low, vmax=high)
                ax.set_title(f"ch {c}", fontsize=7, pad=2)
        sub.colorbar(image_artist, ax=axes, shrink=0.9, aspect=12)
        c_out, h, w = outputs[name].shape
        sub.suptitle(f"{_describe(name, conv)}: output {c_out}\u00d7{h}\u00d7{w}", fontsize=8, x=0.02, ha="left")
    shown = f"{len(names)} of {len(convs)} conv layers" if len(names) < len(convs) else f"{len(convs)} conv layers"
    fig.suptitle(f"{title}\nfirst {channels} channels after each conv (before its activation), {shown}",
                 fontsize=10)
    return fig


# --- mistakes ---------------------------------------------------------------------------------

def mistakes_figure(
    images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor, *, count: int = 24, ncols: int = 8,
    title: str = "",
) -> Figure:
    """The first ``count`` misclassified ``images`` (uint8 ``(N, H, W)``): true class above, prediction below.

    The images are one mosaic (``plots.tile_grid``), grey from 0 (black) to 255 (white).
    """
    wrong = torch.nonzero(predictions.cpu() != labels.cpu()).flatten()
    shown = wrong[:count].tolist()
    heading = f"{title}: {len(wrong)} of {len(labels)} test images misclassified"
    if not shown:
        fig = Figure(figsize=(6, 2))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.text(0.5, 0.45, "no mistakes", ha="center", va="center", fontsize=14)
        fig.suptitle(heading, fontsize=10)
        return fig
    heading += f" (the first {len(shown)})" if len(shown) < len(wrong) else ""
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
        grid.above(r, c, f"true: {CLASSES[int(labels[i])]}", fontsize=7.5, pad=3)
        grid.below(r, c, f"pred: {CLASSES[int(predictions[i])]}", fontsize=7.5, pad=3, color="tab:red")
    grid.fig.suptitle(heading, fontsize=10, y=1 - 0.1 / grid.fig.get_figheight())
    return grid.fig


# --- curves of several runs -------------------------------------------------------------------

def runs_figure(histories: Mapping[str, Sequence[dict]], *, title: str = "") -> Figure:
    """Train loss and test accuracy per epoch of several runs (``{label: metrics rows}``), a colour per run."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    last = max((r["epoch"] for rows in histories.values() for r in rows), default=1)
    for label, rows in histories.items():
        epochs = [r["epoch"] for r in rows]
        (line,) = ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-o", ms=3, label=label)
        ax_acc.plot(epochs, [r["test_acc"] for r in rows], "-o", ms=3, color=line.get_color())
    for ax, name in ((ax_loss, "train loss"), (ax_acc, "test accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.legend(loc="outside lower center", ncols=min(len(histories), 4), fontsize=8)
    fig.suptitle(title or "runs compared", fontsize=11)
    return fig


# --- the seed's worked examples ---------------------------------------------------------------

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
    """The seed's examples: ``corr2d`` of ``[[0..8]]`` with ``[[0, 1], [2, 3]]``, then padding 1 and stride 2.

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
          fills={key: matplotlib.colors.to_rgba(c, 0.25) for key, c in colours.items()})
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
          fills={key: matplotlib.colors.to_rgba(c, 0.25) for key, c in colours.items()})
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


# --- run directories --------------------------------------------------------------------------

def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (one per completed epoch)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no metrics.jsonl (not a convzoo run directory, or no epoch completed)")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path} is not valid JSON lines ({exc})") from None


def show_kernels(run_dir: str | Path, out: str | Path | None = None, *, layer: str | None = None) -> Path:
    """Draw the kernels of conv layer ``layer`` (default: the first) of a run to ``kernels.png``."""
    model = load_run(run_dir, "cpu")[1]
    return save_figure(layer_kernels_figure(model, layer), out or Path(run_dir) / "kernels.png")


def show_features(run_dir: str | Path, image: str | Path, out: str | Path | None = None, *,
                  invert: str = "auto", channels: int = 8) -> Path:
    """Draw the feature maps of a run's model for the image file ``image`` to ``features.png``."""
    config, model, _ = load_run(run_dir, "cpu")
    pixels = load_image(image, invert=invert)
    title = f"{config.model} on {Path(image).name} (input {config.resize}\u00d7{config.resize})"
    fig = features_figure(model, pixels, config.resize, channels=channels, title=title)
    return save_figure(fig, out or Path(run_dir) / "features.png")


def evaluated_images(run_dir: str | Path, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels a run was evaluated on (uint8 ``(N, 28, 28)``, int64 ``(N,)``)."""
    config = read_run_config(run_dir)["config"]
    images, labels = load_split("test", data_dir or config.data_dir)
    return images[: config.limit_test], labels[: config.limit_test]


def show_mistakes(run_dir: str | Path, out: str | Path | None = None, *, count: int = 24, device: str = "auto",
                  data_dir: str | None = None) -> Path:
    """Evaluate a run and draw its first ``count`` misclassified test images to ``mistakes.png``."""
    if count < 1:
        raise RunFileError(f"--count must be at least 1, got {count}")
    model_name = read_run_config(run_dir)["config"].model
    evaluation = evaluate_run(run_dir, device, data_dir)
    images, labels = evaluated_images(run_dir, data_dir)
    fig = mistakes_figure(images, labels, evaluation.predictions, count=count, title=model_name)
    return save_figure(fig, out or Path(run_dir) / "mistakes.png")


def show_confusion(run_dir: str | Path, out: str | Path | None = None, *, device: str = "auto",
                   data_dir: str | None = None, evaluation: Evaluation | None = None) -> Path:
    """Draw a run's confusion matrix to ``confusion.png`` (what ``convzoo eval`` writes).

    The run is evaluated on ``device`` unless its ``evaluation`` is given.
    """
    config = read_run_config(run_dir)["config"]
    evaluation = evaluation or evaluate_run(run_dir, device, data_dir)
    return plot_confusion(evaluation.confusion, CLASSES, out or Path(run_dir) / "confusion.png",
                          title=f"{config.model}: test accuracy {evaluation.accuracy:.4f}")


def run_label(run_dir: str | Path) -> str:
    """A run's name in legends and tables: its directory name."""
    return Path(run_dir).resolve().name


def run_histories(run_dirs: Sequence[str | Path]) -> dict[str, list[dict]]:
    """``{run label: metrics rows}`` of several runs; a repeated directory name gets a prime."""
    if not run_dirs:
        raise RunFileError("no run directory given")
    histories: dict[str, list[dict]] = {}
    for run_dir in run_dirs:
        label = run_label(run_dir)
        while label in histories:
            label += "'"
        histories[label] = read_metrics(run_dir)
    return histories


def show_curves(run_dirs: Sequence[str | Path], out: str | Path = "curves-compared.png") -> Path:
    """Overlay the train loss and test accuracy of several runs, labelled by directory name."""
    histories = run_histories(run_dirs)
    fig = runs_figure(histories, title=f"{len(histories)} runs compared" if len(histories) > 1 else "")
    return save_figure(fig, out)


def show_ops(out: str | Path = "ops.png") -> Path:
    """Draw the worked examples of ``ops_figure`` to ``out``."""
    return save_figure(ops_figure(), out)
