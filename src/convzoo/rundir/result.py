"""``result.json``: a finished run's final test accuracy, time, epochs, per-class accuracy and warnings."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RunFileError
from ..fileio import write_json
from ..terms import continue_command, quoted
from .layout import RESULT
from .metrics import is_number

RESULT_KEYS = ("test_acc", "train_seconds", "epochs")


def write_result(run_dir: Path, summary: dict, per_class_accuracy: dict[str, float]) -> None:
    """Write ``result.json``: the run's summary (``Run.to_json``) and its accuracy per class."""
    write_json(run_dir / RESULT, {**summary, "per_class_accuracy": per_class_accuracy})


def read_result(run_dir: str | Path) -> dict:
    """A finished run's ``result.json``: ``run_dir, test_acc, train_seconds, epochs, per_class_accuracy``."""
    path = Path(run_dir) / RESULT
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no result.json: the run has not finished "
                           f"(continue it with {quoted(continue_command(run_dir))})")
    try:
        result = json.loads(path.read_bytes())
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or a number of more than 4,300 digits
        raise RunFileError(f"{path} is not valid JSON") from None
    missing = [key for key in RESULT_KEYS if not is_number(result.get(key) if isinstance(result, dict) else None)]
    if missing:
        raise RunFileError(f"{path} has no number for {', '.join(missing)}; the file was edited or damaged "
                           f"(re-create it with 'convzoo eval {run_dir}' and a new run, or restore it)")
    return result
