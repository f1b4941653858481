"""Several finished runs side by side: a table, the settings that differ, and their curves.

``compare_runs`` reads one row per run (model, recipe, input size, parameters, MACs, epochs, train
time, test accuracy); ``differing_settings`` the configuration fields whose values are not the
same in every run; ``write_comparison`` writes both as one self-contained page that links to each
run's own ``report.html``, with the runs' curves overlaid.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .escape import href, terminal
from .figures import figure_png, runs_figure
from .fileio import write_text
from .htmlpage import esc, img, number, page, table
from .report import model_size
from .rundir import check_output, read_metrics, read_result, read_run_config, run_histories, run_label

COMPARE_COLUMNS = ("run", "model", "recipe", "input_size", "params", "macs", "epochs", "train_seconds",
                   "examples_per_sec", "test_images", "test_acc")
HEADINGS = {"run": "run", "model": "model", "recipe": "recipe", "input_size": "input", "params": "parameters",
            "macs": "MACs / image", "epochs": "epochs", "train_seconds": "train time (s)",
            "examples_per_sec": "train ex/s", "test_images": "test images", "test_acc": "test accuracy",
            "ran_with": "ran with"}


def compare_runs(run_dirs: Sequence[str | Path]) -> list[dict]:
    """One row per finished run: run, model, recipe, input size, parameters, MACs, epochs, seconds, training
    examples per second (the mean of its epochs'), test images scored, test accuracy, and the threads and load it
    ran with (runs written before these were recorded show ``-``)."""
    rows = []
    for run_dir in run_dirs:
        meta = read_run_config(run_dir)
        config = meta["config"]
        result = read_result(run_dir)
        params, macs = model_size(meta)
        rates = [row["examples_per_sec"] for row in read_metrics(run_dir)]
        rows.append({
            "run": run_label(run_dir), "run_dir": str(run_dir), "model": config.model, "recipe": config.recipe,
            "input_size": config.input_size, "params": params, "macs": macs, "epochs": result["epochs"],
            "train_seconds": result["train_seconds"], "test_acc": result["test_acc"],
            "examples_per_sec": round(sum(rates) / len(rates)) if rates else "-",
            "test_images": result.get("test_images", "-"), "ran_with": result.get("ran_with", "-"),
        })
    return rows


def differing_settings(run_dirs: Sequence[str | Path]) -> dict[str, list[object]]:
    """``{setting: [value of each run]}`` for the configuration fields that are not the same in every run."""
    configs = [asdict(read_run_config(run_dir)["config"]) for run_dir in run_dirs]
    return {key: [config[key] for config in configs] for key in configs[0]
            if any(config[key] != configs[0][key] for config in configs)} if configs else {}


def format_table(rows: Sequence[dict]) -> str:
    """The rows as an aligned text table (a column is as wide as its longest entry)."""
    cells = [[HEADINGS[key] for key in COMPARE_COLUMNS]]
    cells += [[terminal(_text(row[key], key)) for key in COMPARE_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COMPARE_COLUMNS))]
    left = {"run", "model", "recipe"}
    return "\n".join("  ".join(cell.ljust(width) if key in left else cell.rjust(width)
                               for cell, width, key in zip(line, widths, COMPARE_COLUMNS)).rstrip()
                     for line in cells)


def _text(value: object, key: str) -> str:
    if key == "train_seconds":
        return f"{value:.1f}"
    if key == "test_acc":
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path = "compare.html") -> tuple[Path, list[dict]]:
    """Write one HTML page comparing ``run_dirs``; returns its path and the rows.

    ``out`` may not replace one of a run's own files (``rundir.check_output``): refused before any work.
    """
    out = check_output(out)
    rows = compare_runs(run_dirs)
    differing = differing_settings(run_dirs)
    figure = runs_figure(run_histories(run_dirs), title=f"{len(rows)} runs compared")
    curves = img(figure_png(figure), "train loss and test accuracy of the runs")
    columns = (*COMPARE_COLUMNS, "ran_with")
    body_rows = [[_report_link(row, out)] + [esc(number(row[key])) for key in columns[1:]] for row in rows]
    runs_table = table([HEADINGS[key] for key in columns], body_rows, left=3, escape=False)
    if differing:
        settings = table(["setting", *(row["run"] for row in rows)],
                         [[key, *(number(v) for v in values)] for key, values in differing.items()], left=1)
    else:
        settings = "<p>Every setting is the same in all the runs.</p>"
    body = (f"<h1>{len(rows)} runs compared</h1>\n{runs_table}\n<h2>Settings that differ</h2>\n{settings}\n"
            f"<h2>Train loss and test accuracy</h2>\n{curves}")
    return write_text(out, page("convzoo runs compared", body)), rows


def _report_link(row: dict, out: Path) -> str:
    """The run's name, linked to its ``report.html`` relative to the page when there is one."""
    report = Path(row["run_dir"]) / "report.html"
    if not report.is_file():
        return esc(row["run"])
    link = os.path.relpath(report.resolve(), out.resolve().parent)
    return f'<a href="{href(Path(link))}">{esc(row["run"])}</a>'
