"""The run directory's layout: the name of every file a run writes, the marker that proves convzoo made the
directory, and what may be reused, replaced or swept.

    config.json              resolved config, model arguments, versions, device, command
    metrics.jsonl            one line per completed epoch
    checkpoint.safetensors   resume state after the last completed epoch (written every epoch)
    model.safetensors        final weights + the model's name and arguments
    result.json              final test accuracy, time, per-class accuracy
    curves.png, confusion.png, kernels.png, mistakes.png, report.html
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..checkpoint import FORMAT
from ..errors import ConfigError
from ..terms import option, resume, setting

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
RESULT = "result.json"
REPORT = "report.html"
MARKER = ".convzoo-run"  # written first into every run directory: what proves convzoo made it
LOCK = ".convzoo-lock"  # the process id of the one process that trains into the directory, while it does
MARKER_FORMAT = "convzoo-run-1"
PICTURES = ("curves.png", "confusion.png", "kernels.png", "mistakes.png", "features.png")
EXPORTS = ("model.onnx", "model.pt")

# What a run is made of: no command's output may replace one of these in a run directory.
OWN_FILES = frozenset({MARKER, LOCK, CONFIG, METRICS, CHECKPOINT, MODEL, RESULT})
# Every name convzoo writes into a run directory; ``--overwrite`` removes these and nothing else.
RUN_FILES = frozenset({MARKER, LOCK, CONFIG, METRICS, CHECKPOINT, MODEL, RESULT, REPORT, *PICTURES, *EXPORTS})
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?$")  # fileio.atomic_path's names


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of ``fileio.atomic_path`` (left behind only by a killed process)."""
    return bool(_TEMPORARY.fullmatch(name))  # fullmatch: "$" alone would take a name ending in a newline


def is_run_dir(path: str | Path) -> bool:
    """Whether convzoo can prove it made the directory ``path``: its marker, or (before markers) a config.json of
    this format in a directory holding only run files."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    try:
        meta = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT and not foreign_entries(path)


def foreign_entries(path: Path) -> list[str]:
    """What in the run directory ``path`` convzoo did not write (sorted names)."""
    return sorted(entry.name for entry in path.iterdir()
                  if not (entry.name in RUN_FILES or is_temporary(entry.name))
                  or entry.is_symlink() or not entry.is_file())


def check_run_dir(run_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse ``run_dir`` if it is not a directory, or a non-empty one that ``overwrite`` may not replace.

    A run directory that never completed an epoch (its start failed) is reused without ``overwrite``.
    ``overwrite`` replaces only a directory convzoo can prove it made (``is_run_dir``) and that holds
    nothing else (``foreign_entries``).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{setting('out', run_dir)} exists and is not a directory", field="out")
    existing = next((parent for parent in run_dir.absolute().parents if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{setting('out', run_dir)}: {existing} is a file, not a directory; choose another "
                          f"{option('out')}", field="out")
    if not run_dir.is_dir() or not any(entry.name != LOCK for entry in run_dir.iterdir()):
        return  # a new or empty directory (the lock file is the creator's own)
    out = option("out")
    if not is_run_dir(run_dir):
        what = "it is not a convzoo run directory" if not (run_dir / CONFIG).is_file() else \
            "it holds files convzoo did not write"
        raise ConfigError(f"{run_dir} already exists and {what}; choose another {out}"
                          if not overwrite else f"refusing to overwrite {run_dir}: {what}", field="out")
    if foreign := foreign_entries(run_dir):
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(f"refusing to {'overwrite' if overwrite else 'use'} {run_dir}: it holds files convzoo did "
                          f"not write ({listed}); move them or choose another {out}", field="out")
    if not overwrite and ((run_dir / CHECKPOINT).exists() or (run_dir / MODEL).exists()):
        raise ConfigError(f"{run_dir} already exists; use {resume(run_dir)} to continue it, "
                          f"{setting('overwrite', True)} to replace it, or another {out}", field="out")


def check_output(path: str | Path, name: str = "out") -> Path:
    """Refuse an output file (a picture, a page, an export) that would replace one of a run's own files."""
    path = Path(path)
    if path.name in OWN_FILES and is_run_dir(path.parent):
        raise ConfigError(f"{setting(name, path)} would replace the run's own {path.name}; choose another "
                          f"{option(name)}", field=name)
    return path


def remove_temporary_files(run_dir: Path) -> None:
    """Remove what a killed process left of its atomic writes in ``run_dir`` (the caller holds the lock)."""
    for entry in run_dir.iterdir():
        if is_temporary(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)


def run_label(run_dir: str | Path) -> str:
    """A run's name in legends and tables: its directory name."""
    return Path(run_dir).resolve().name
