"""The run directory: the one owner of the files a run writes, each file's writer beside its reader.

    layout.py        the file names, the marker, what may be reused, replaced or swept (``check_run_dir``)
    lock.py          ``RunDirectory``: created atomically, held by one process, cleaned up on failure
    config_file.py   config.json     metrics.py  metrics.jsonl     result.py  result.json
    epochs.py        ``EpochWriter``: each epoch's checkpoint and metrics, written while the next one trains
    load.py          a run read back: the configuration to train (``resolve_run``), the trained model (``load_run``)

The weights files (``model.safetensors``, ``checkpoint.safetensors``) are written and read by
``convzoo.checkpoint``; the pictures and ``report.html`` by ``convzoo.report``. Every file is written
atomically (``convzoo.fileio``); the readers turn a missing or damaged file into a one-line ``RunFileError``.
"""

from .config_file import read_run_config, run_classes, update_config, write_config
from .epochs import EpochWriter
from .layout import (
    CHECKPOINT,
    CONFIG,
    LOCK,
    MARKER,
    MARKER_FORMAT,
    METRICS,
    MODEL,
    REPORT,
    RESULT,
    RUN_FILES,
    check_output,
    check_run_dir,
    foreign_entries,
    is_run_dir,
    is_temporary,
    run_label,
)
from .load import load_run, resolve_run, resume_hint, resumed_epochs
from .lock import RunDirectory, RunLock, held, writing_into
from .metrics import metrics_text, read_metrics, run_histories, train_seconds, write_metrics
from .result import read_result, write_result

__all__ = [
    "CHECKPOINT", "CONFIG", "LOCK", "MARKER", "MARKER_FORMAT", "METRICS", "MODEL", "REPORT", "RESULT", "RUN_FILES",
    "EpochWriter", "RunDirectory", "RunLock", "check_output", "check_run_dir", "foreign_entries", "held", "is_run_dir",
    "is_temporary", "load_run", "metrics_text", "read_metrics", "read_result", "read_run_config", "resolve_run",
    "resume_hint", "resumed_epochs", "run_classes", "run_histories", "run_label", "train_seconds", "update_config",
    "write_config", "write_metrics", "write_result", "writing_into",
]
