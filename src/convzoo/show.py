"""Pictures of a run, drawn from its directory: the ``convzoo show`` commands.

    show_kernels(run_dir)            kernels.png    learned kernels of one conv layer
    show_features(run_dir, image)    features.png   feature maps after the conv layers, one image
    show_mistakes(run_dir)           mistakes.png   misclassified test images, true and predicted class
    show_confusion(run_dir)          confusion.png  the confusion matrix, as ``convzoo eval`` draws it
    show_curves([run_dir, ...], out)                several runs' train loss and test accuracy
    show_ops(out)                                   the chapter's worked examples of corr2d, padding, stride

Each reads what it needs from the run directory, builds the figure with ``convzoo.figures`` and
saves it into the run directory unless ``out`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError
from .evaluate import Evaluation
from .figures import (
    confusion_figure,
    features_figure,
    layer_kernels_figure,
    mistakes_figure,
    ops_figure,
    runs_figure,
    save_figure,
)
from .images import load_image
from .run import Run
from .rundir import check_output, load_run, read_run_config, run_classes, run_histories
from .terms import option

MAX_PICTURES = 1000  # images in one grid: more cannot be told apart on a screen, and the PNG grows past 100 MB
MAX_CHANNELS = 256  # feature maps per layer in show_features


def check_count(name: str, value: int, largest: int) -> None:
    """Refuse a count of pictures below 1 or above ``largest``, naming the setting ``name``."""
    if not 1 <= value <= largest:
        raise ConfigError(f"{option(name)} must be between 1 and {largest:,}, got {value:,}", field=name)


def show_kernels(run_dir: str | Path, out: str | Path | None = None, *, layer: str | None = None) -> Path:
    """Draw the kernels of conv layer ``layer`` (default: the first) of a run to ``kernels.png``."""
    out = check_output(out or Path(run_dir) / "kernels.png")
    model = load_run(run_dir, "cpu")[1]
    return save_figure(layer_kernels_figure(model, layer), out)


def show_features(run_dir: str | Path, image: str | Path, out: str | Path | None = None, *,
                  invert: str = "auto", channels: int = 8) -> Path:
    """Draw the feature maps of a run's model for the image file ``image`` to ``features.png``."""
    check_count("channels", channels, MAX_CHANNELS)
    out = check_output(out or Path(run_dir) / "features.png")
    config, model, _ = load_run(run_dir, "cpu")
    meta = read_run_config(run_dir)
    if meta["data"]["channels"] != 1:
        raise ConfigError(f"{run_dir} was trained on colour images: show features draws the feature maps of runs "
                          "on gray images only", field="image")
    pixels = load_image(image, invert=invert, size=meta["data"]["size"])
    title = f"{config.model} on {Path(image).name} (input {config.input_size}\u00d7{config.input_size})"
    fig = features_figure(model, pixels, config.input_size, channels=channels, title=title,
                          classes=run_classes(meta))
    return save_figure(fig, out)


def show_mistakes(run_dir: str | Path, out: str | Path | None = None, *, count: int = 24, device: str = "auto",
                  data_dir: str | None = None) -> Path:
    """Evaluate a run and draw its first ``count`` misclassified test images to ``mistakes.png``."""
    check_count("count", count, MAX_PICTURES)
    out = check_output(out or Path(run_dir) / "mistakes.png")
    scored = Run.open(run_dir, device).evaluated(data_dir)
    evaluation = scored.evaluation
    fig = mistakes_figure(scored.images, scored.labels, evaluation.predictions, count=count, title=scored.config.model,
                          losses=evaluation.losses, confidences=evaluation.confidences, classes=scored.classes)
    return save_figure(fig, out)


def show_confusion(run_dir: str | Path, out: str | Path | None = None, *, device: str = "auto",
                   data_dir: str | None = None, evaluation: Evaluation | None = None) -> Path:
    """Draw a run's confusion matrix to ``confusion.png`` (what ``convzoo eval`` writes).

    The run is evaluated on ``device`` unless its ``evaluation`` is given.
    """
    out = check_output(out or Path(run_dir) / "confusion.png")
    meta = read_run_config(run_dir)
    evaluation = evaluation or Run.open(run_dir, device).evaluate(data_dir, progress=False)
    title = f"{meta['config'].model}: test accuracy {evaluation.accuracy:.4f}"
    return save_figure(confusion_figure(evaluation.confusion, run_classes(meta), title=title), out)


def show_curves(run_dirs: Sequence[str | Path], out: str | Path = "curves-compared.png") -> Path:
    """Overlay the train loss and test accuracy of several runs, labelled by directory name."""
    out = check_output(out)
    histories = run_histories(run_dirs)
    fig = runs_figure(histories, title=f"{len(histories)} runs compared" if len(histories) > 1 else "")
    return save_figure(fig, out)


def show_ops(out: str | Path = "ops.png") -> Path:
    """Draw the worked examples of ``ops_figure`` to ``out``."""
    return save_figure(ops_figure(), check_output(out))
