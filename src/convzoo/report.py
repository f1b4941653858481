"""A run's report: one self-contained HTML page (``report.html``) built from the run's objects.

``write_report(record)`` shows the config, the metrics table, the curves, the confusion matrix,
per-class accuracy, kernels of the first conv layer and misclassified test images. Training
calls it with what it holds in memory (``pictures=True`` also leaves ``curves.png``,
``confusion.png``, ``kernels.png`` and ``mistakes.png`` in the run directory);
``convzoo report RUN`` with ``Run.open(RUN).evaluated()``, and then writes no picture, so pictures
drawn by ``convzoo show`` with other options stay as they are.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
from matplotlib.figure import Figure

from .checkpoint import build_from_config
from .figures import (
    confusion_figure,
    conv_layers,
    curves_figure,
    figure_png,
    layer_kernels_figure,
    mistakes_figure,
)
from .fileio import write_bytes, write_text
from .htmlpage import esc, img, number, page, seconds, table
from .run import EvaluatedRun
from .rundir import run_label, train_seconds
from .summary import summarize


def model_size(meta: dict) -> tuple[int, int]:
    """``(parameters, MACs per image)`` of a run's model at its input size, measured on the meta device."""
    config = meta["config"]
    with torch.device("meta"):
        model = build_from_config(meta["model"])
    summary = summarize(model, config.input_size, in_channels=meta["model"].get("in_channels", 1))
    return summary.total_params, summary.total_macs


def report_figures(run: EvaluatedRun) -> dict[str, Figure]:
    """The report's pictures: curves, confusion, kernels (when the model has a conv layer), mistakes."""
    config, evaluation = run.config, run.evaluation
    figures = {
        "curves": curves_figure(run.history, title=config.model),
        "confusion": confusion_figure(evaluation.confusion, run.classes,
                                      title=f"{config.model}: test accuracy {evaluation.accuracy:.4f}"),
    }
    if conv_layers(run.model):
        figures["kernels"] = layer_kernels_figure(run.model)
    figures["mistakes"] = mistakes_figure(run.images, run.labels, evaluation.predictions, title=config.model,
                                          losses=evaluation.losses, confidences=evaluation.confidences,
                                          classes=run.classes)
    return figures


def write_report(run: EvaluatedRun, *, pictures: bool = False) -> Path:
    """Write ``report.html`` into the run directory; with ``pictures`` also each picture as a PNG file there."""
    config, meta, history, evaluation = run.config, run.meta, run.history, run.evaluation
    embedded = {}
    for key, figure in report_figures(run).items():
        png = figure_png(figure)
        if pictures:
            write_bytes(run.run_dir / f"{key}.png", png)
        embedded[key] = img(png, f"{key} of {run_label(run.run_dir)}")
    params, macs = model_size(meta)
    train_time = train_seconds(history)

    cards = [
        ("test accuracy", f"{evaluation.accuracy:.4f}"), ("epochs", f"{len(history)} of {config.epochs}"),
        ("train time", seconds(train_time)), ("parameters", f"{params:,}"), ("MACs / image", f"{macs:,}"),
        ("input", f"{config.input_size}\u00d7{config.input_size}"), ("test images", f"{len(evaluation.predictions):,}"),
    ]
    if history and "val_acc" in history[-1]:  # the epochs were scored on a validation split, the test set once
        cards.insert(1, ("validation accuracy (last epoch)", f"{history[-1]['val_acc']:.4f}"))
    per_class = []
    for cls, acc in zip(run.classes, evaluation.per_class_accuracy):
        if math.isnan(acc):  # no test image of this class
            value, bar = "\u2013", ""
        else:
            value, bar = f"{acc:.4f}", f'<span class="bar" style="width:{acc * 160:.0f}px"></span>'
        per_class.append(f"<tr><td class=l>{esc(cls)}</td><td>{value}</td><td class=l>{bar}</td></tr>")
    metric_keys = list(dict.fromkeys(key for row in history for key in row))
    settings = [(key, number(value)) for key, value in asdict(config).items()]
    settings += [(f"model.{key}", number(value)) for key, value in meta["model"].items() if key != "name"]
    environment = [(key, value) for key, value in meta.get("versions", {}).items()]
    environment += [("device", f"{meta.get('device', '?')} ({meta.get('device_name', '?')})"),
                    ("created", meta.get("created", "?"))]

    pairs = evaluation.most_confused(5)
    confused = table(["true class", "taken for", "test images"],
                     [[run.classes[t], run.classes[p], f"{n:,}"] for t, p, n in pairs], left=2) if pairs else ""
    command = esc(meta.get("command", ""))
    cards_html = "".join(f"<div class=card><b>{esc(value)}</b><span>{esc(key)}</span></div>" for key, value in cards)
    body = f"""<h1>{esc(config.model)} \u00b7 {esc(config.recipe)} recipe</h1>
<p class="sub">run <code>{esc(run_label(run.run_dir))}</code> \u00b7 command <code>{command}</code></p>
<div class="cards">{cards_html}</div>
<h2>Training curves</h2>
{embedded["curves"]}
{table(metric_keys, [[number(row.get(key, "")) for key in metric_keys] for row in history], left=0)}
<h2>Test set</h2>
<div class="row">
<div>{embedded["confusion"]}</div>
<div><table>
<tr><th class=l>class</th><th>accuracy</th><th class=l></th></tr>
{"".join(per_class)}
</table></div>
</div>
{f"<h2>Kernels of the first convolution</h2>{embedded['kernels']}" if "kernels" in embedded else ""}
<h2>Mistakes</h2>
{confused}
{embedded["mistakes"]}
<h2>Configuration</h2>
<div class="row">
<div>{table(["setting", "value"], settings, left=2)}</div>
<div>{table(["environment", ""], environment, left=2)}</div>
</div>"""
    return write_text(run.run_dir / "report.html", page(f"{config.model} run {run_label(run.run_dir)}", body))
