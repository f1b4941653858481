"""Run reports and run comparisons as single self-contained HTML files.

``write_report(run_dir)`` writes ``report.html``: config, metrics table, curves, confusion matrix,
per-class accuracy, kernels of the first conv layer and misclassified test images. Pictures are
PNG ``data:`` URIs and the style sheet is inline, so the file opens anywhere, offline, on its own;
there is no script. The pictures are also left in the run directory (``curves.png``,
``confusion.png``, ``kernels.png``, ``mistakes.png``).

``compare_runs`` tabulates several runs (model, recipe, parameters, MACs, epochs, train time, test
accuracy) and ``write_comparison`` writes them as one page with their curves overlaid.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from .checkpoint import build_from_config, load_model
from .data import CLASSES
from .errors import RunFileError
from .figures import (
    conv_layers,
    curves_figure,
    figure_png,
    layer_kernels_figure,
    mistakes_figure,
    runs_figure,
    save_figure,
)
from .fileio import write_text
from .show import evaluated_images, read_metrics, run_histories, run_label, show_confusion
from .summary import summarize
from .train import Evaluation, evaluate_run, read_run_config

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d1d1f; margin: 0; background: #f6f6f4; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 1.25em; } .card span { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: right; }
th { background: #f0f0ee; } td.l, th.l { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; } .row img { max-width: 640px; }
.bar { background: #4c78a8; height: 11px; display: inline-block; vertical-align: middle; }
code { background: #f0f0ee; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_esc(alt)}">'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{_esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (names), the rest right-aligned (numbers)."""
    def cells(tag: str, values: Sequence[object]) -> str:
        return "".join(f'<{tag}{" class=l" if i < left else ""}>{_esc(v)}</{tag}>' for i, v in enumerate(values))

    body = "\n".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table>\n<tr>{cells('th', header)}</tr>\n{body}\n</table>"


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def model_size(meta: dict) -> tuple[int, int]:
    """``(parameters, MACs per image)`` of a run's model at its input size, measured on the meta device."""
    config = meta["config"]
    with torch.device("meta"):
        model = build_from_config(meta["model"])
    summary = summarize(model, config.resize, in_channels=meta["model"].get("in_channels", 1))
    return summary.total_params, summary.total_macs


def read_result(run_dir: str | Path) -> dict:
    """A finished run's ``result.json``: ``run_dir, test_acc, train_seconds, epochs, per_class_accuracy``."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no result.json: the run has not finished "
                           f"(continue it with 'convzoo train --resume {run_dir}')")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RunFileError(f"{path} is not valid JSON") from None


def write_report(
    run_dir: str | Path, *, evaluation: Evaluation | None = None, device: str = "auto", data_dir: str | None = None,
) -> Path:
    """Write ``run_dir/report.html`` and the pictures it shows; returns the report's path.

    ``evaluation`` is the final test evaluation when the caller has it (``finish_run`` does);
    otherwise the run's model is evaluated again on ``device``.
    """
    run_dir = Path(run_dir)
    meta = read_run_config(run_dir)
    config = meta["config"]
    history = read_metrics(run_dir)
    model = load_model(run_dir / "model.safetensors")  # for its kernels: not load_run's channels_last copy
    if evaluation is None:
        evaluation = evaluate_run(run_dir, device, data_dir)
    images, labels = evaluated_images(run_dir, data_dir)
    params, macs = model_size(meta)
    train_seconds = sum(r["seconds"] + r.get("eval_seconds", 0) for r in history)

    pictures = {}
    save_figure(curves_figure(history, title=config.model), run_dir / "curves.png")
    show_confusion(run_dir, evaluation=evaluation)
    if conv_layers(model):
        pictures["kernels"] = save_figure(layer_kernels_figure(model), run_dir / "kernels.png")
    save_figure(mistakes_figure(images, labels, evaluation.predictions, title=config.model), run_dir / "mistakes.png")
    pictures.update(curves=run_dir / "curves.png", confusion=run_dir / "confusion.png",
                    mistakes=run_dir / "mistakes.png")
    embedded = {key: _img(path.read_bytes(), f"{key} of {run_label(run_dir)}") for key, path in pictures.items()}

    cards = [
        ("test accuracy", f"{evaluation.accuracy:.4f}"), ("epochs", f"{len(history)} of {config.epochs}"),
        ("train time", _seconds(train_seconds)), ("parameters", f"{params:,}"), ("MACs / image", f"{macs:,}"),
        ("input", f"{config.resize}\u00d7{config.resize}"), ("test images", f"{len(evaluation.predictions):,}"),
    ]
    per_class = []
    for cls, acc in zip(CLASSES, evaluation.per_class_accuracy):
        if math.isnan(acc):  # no test image of this class
            value, bar = "\u2013", ""
        else:
            value, bar = f"{acc:.4f}", f'<span class="bar" style="width:{acc * 160:.0f}px"></span>'
        per_class.append(f"<tr><td class=l>{_esc(cls)}</td><td>{value}</td><td class=l>{bar}</td></tr>")
    metric_keys = list(dict.fromkeys(key for row in history for key in row))
    settings = [(key, _number(value)) for key, value in asdict(config).items()]
    settings += [(f"model.{key}", _number(value)) for key, value in meta["model"].items() if key != "name"]
    environment = [(key, value) for key, value in meta.get("versions", {}).items()]
    environment += [("device", f"{meta.get('device', '?')} ({meta.get('device_name', '?')})"),
                    ("created", meta.get("created", "?"))]

    command = _esc(meta.get("command", ""))
    cards_html = "".join(f"<div class=card><b>{_esc(value)}</b><span>{_esc(key)}</span></div>" for key, value in cards)
    body = f"""<h1>{_esc(config.model)} \u00b7 {_esc(config.recipe)} recipe</h1>
<p class="sub">run <code>{_esc(run_label(run_dir))}</code> \u00b7 command <code>{command}</code></p>
<div class="cards">{cards_html}</div>
<h2>Training curves</h2>
{embedded["curves"]}
{_table(metric_keys, [[_number(row.get(key, "")) for key in metric_keys] for row in history], left=0)}
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
{embedded["mistakes"]}
<h2>Configuration</h2>
<div class="row">
<div>{_table(["setting", "value"], settings, left=2)}</div>
<div>{_table(["environment", ""], environment, left=2)}</div>
</div>"""
    return write_text(run_dir / "report.html", _page(f"{config.model} run {run_label(run_dir)}", body))


def compare_runs(run_dirs: Sequence[str | Path]) -> list[dict]:
    """One row per finished run: run, model, recipe, input size, parameters, MACs, epochs, seconds, test accuracy."""
    rows = []
    for run_dir in run_dirs:
        meta = read_run_config(run_dir)
        config = meta["config"]
        result = read_result(run_dir)
        params, macs = model_size(meta)
        rows.append({
            "run": run_label(run_dir), "run_dir": str(run_dir), "model": config.model, "recipe": config.recipe,
            "input_size": config.resize, "params": params, "macs": macs, "epochs": result["epochs"],
            "train_seconds": result["train_seconds"], "test_acc": result["test_acc"],
        })
    return rows


COMPARE_COLUMNS = ("run", "model", "recipe", "input_size", "params", "macs", "epochs", "train_seconds", "test_acc")


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path = "compare.html") -> tuple[Path, list[dict]]:
    """Write one HTML page comparing ``run_dirs`` (a table and their overlaid curves); returns it and the rows."""
    rows = compare_runs(run_dirs)
    figure = runs_figure(run_histories(run_dirs), title=f"{len(rows)} runs compared")
    curves = _img(figure_png(figure), "train loss and test accuracy of the runs")
    table = _table(COMPARE_COLUMNS, [[_number(row[key]) for key in COMPARE_COLUMNS] for row in rows], left=3)
    body = f"<h1>{len(rows)} runs compared</h1>\n{table}\n<h2>Train loss and test accuracy</h2>\n{curves}"
    return write_text(out, _page("convzoo runs compared", body)), rows
