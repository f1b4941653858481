"""``metrics.jsonl``: one JSON object per completed epoch, and the run's time and curves read from it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import HISTORY_KEYS, SCORED_ON
from ..errors import RunFileError
from ..fileio import write_text
from .layout import METRICS, run_label

# What every metrics.jsonl row holds (rows of runs before eval_seconds was recorded lack only that), besides one
# of the accuracies ``checkpoint.SCORED_ON`` names.
METRIC_KEYS = tuple(key for key in HISTORY_KEYS if key != "eval_seconds")


def metrics_text(history: list[dict]) -> str:
    """``metrics.jsonl``'s content: one JSON object per epoch."""
    return "".join(json.dumps(row) + "\n" for row in history)


def write_metrics(run_dir: Path, history: list[dict], *, unless_equal: bool = False) -> None:
    """Write ``metrics.jsonl`` (with ``unless_equal``, only when it does not already hold exactly ``history``)."""
    path, text = run_dir / METRICS, metrics_text(history)
    if not (unless_equal and path.is_file() and path.read_text() == text):
        write_text(path, text)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (one per completed epoch)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no metrics.jsonl (not a convzoo run directory, or no epoch completed)")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or a number of more than 4,300 digits
        raise RunFileError(f"{path} is not valid JSON lines ({exc})") from None
    for i, row in enumerate(rows):
        row = row if isinstance(row, dict) else {}
        missing = [key for key in METRIC_KEYS if not is_number(row.get(key))]
        if sum(is_number(row.get(key)) for key in SCORED_ON) != 1:
            missing.append(" or ".join(SCORED_ON))
        if missing:
            raise RunFileError(f"{path}: line {i + 1} is not a row of metrics (no number for {', '.join(missing)}); "
                               "the file was edited or damaged")
    return rows


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def train_seconds(history: list[dict]) -> float:
    """A run's time: its epochs' training and evaluation seconds."""
    return sum(row["seconds"] + row.get("eval_seconds", 0) for row in history)


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
