"""The run directory: the files a run writes, reading them back, and loading the trained run.

A run directory holds everything a run produced:

    config.json              resolved config, model arguments, versions, device, command
    metrics.jsonl            one line per completed epoch
    checkpoint.safetensors   resume state after the last completed epoch (written every epoch)
    model.safetensors        final weights + the model's name and arguments
    result.json              final test accuracy, time, per-class accuracy
    curves.png, confusion.png, kernels.png, mistakes.png, report.html

Every file is written atomically (``convzoo.fileio``); the readers here turn a missing or
damaged file into a one-line ``ConfigError`` or ``RunFileError``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from .checkpoint import FORMAT, HISTORY_KEYS, load_model, refuse_pickle, saved_epoch
from .config import TrainConfig, config_from_dict
from .data import Batches, load_split
from .errors import ConfigError, RunBusyError, RunFileError
from .evaluate import Evaluation, evaluate
from .fileio import write_json, write_text
from .runtime import device_name, resolve_device, versions

MARKER = ".convzoo-run"  # written first into every run directory: what proves convzoo made it
LOCK = ".convzoo-lock"  # the process id of the one process that trains into the directory, while it does
MARKER_FORMAT = "convzoo-run-1"
RESULT_KEYS = ("test_acc", "train_seconds", "epochs")
# What every metrics.jsonl row holds (rows of runs before eval_seconds was recorded lack only that).
METRIC_KEYS = tuple(key for key in HISTORY_KEYS if key != "eval_seconds")

# Every name convzoo writes into a run directory; ``--overwrite`` removes these and nothing else.
RUN_FILES = frozenset({
    MARKER, LOCK, "config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors", "result.json",
    "report.html", "curves.png", "confusion.png", "kernels.png", "mistakes.png", "features.png",
    "model.onnx", "model.pt",
})
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?$")  # fileio.atomic_path's names


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of ``fileio.atomic_path`` (left behind only by a killed process)."""
    return bool(_TEMPORARY.match(name))


def is_run_dir(path: str | Path) -> bool:
    """Whether convzoo can prove it made the directory ``path``: its marker, or (before markers) a config.json of
    this format in a directory holding only run files."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT and not foreign_entries(path)


def foreign_entries(path: Path) -> list[str]:
    """What in the run directory ``path`` convzoo did not write (sorted names)."""
    return sorted(entry.name for entry in path.iterdir()
                  if not (entry.name in RUN_FILES or is_temporary(entry.name))
                  or entry.is_symlink() or not entry.is_file())


class RunLock:
    """The one-writer lock of a run directory: an OS file lock (``flock``) on the directory itself.

    The kernel releases it when the process ends, however it ends. While it is held, ``.convzoo-lock``
    holds the process id of the holder, so that a second writer can be told who holds the
    directory; the file is removed when the lock is released.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``RunBusyError`` naming the process that holds it."""
        fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = (self.run_dir / LOCK).read_text().strip() or "another process"
            except OSError:
                holder = "another process"
            raise RunBusyError(f"{self.run_dir} is in use by process {holder} (a run is training there); wait "
                               "for it to finish, or use another --out") from None
        self._fd = fd
        try:
            write_text(self.run_dir / LOCK, f"{os.getpid()}\n")
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            (self.run_dir / LOCK).unlink(missing_ok=True)
        except OSError:  # a read-only or vanished directory: the lock itself goes with the descriptor
            pass
        os.close(self._fd)
        self._fd = None


def check_run_dir(out: str | Path, overwrite: bool = False) -> None:
    """Refuse ``out`` if it is not a directory, or a non-empty one that ``overwrite`` may not replace.

    A run directory that never completed an epoch (its start failed) is reused without ``overwrite``.
    ``overwrite`` replaces only a directory convzoo can prove it made (``is_run_dir``) and that holds
    nothing else (``foreign_entries``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    existing = next((parent for parent in out.absolute().parents if parent.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, not a directory; choose another --out")
    if not out.is_dir() or not any(entry.name != LOCK for entry in out.iterdir()):
        return  # a new or empty directory (the lock file is the creator's own)
    if not is_run_dir(out):
        what = "it is not a convzoo run directory" if not (out / "config.json").is_file() else \
            "it holds files convzoo did not write"
        raise ConfigError(f"{out} already exists and {what}; choose another --out"
                          if not overwrite else f"refusing to overwrite {out}: {what}")
    if foreign := foreign_entries(out):
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(f"refusing to {'overwrite' if overwrite else 'use'} {out}: it holds files convzoo did "
                          f"not write ({listed}); move them or choose another --out")
    if not overwrite and ((out / "checkpoint.safetensors").exists() or (out / "model.safetensors").exists()):
        raise ConfigError(f"{out} already exists; use --resume {out} to continue it, --overwrite to replace it, "
                          "or another --out")


def remove_temporary_files(run_dir: Path) -> None:
    """Remove what a killed process left of its atomic writes in ``run_dir`` (the caller holds the lock)."""
    for entry in run_dir.iterdir():
        if is_temporary(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)


def create_run_dir(out: Path, overwrite: bool, lock: RunLock) -> bool:
    """Make ``out`` a new, empty run directory held by ``lock``; returns whether the directory was created.

    Under the lock the checks of ``check_run_dir`` are made again (another process may have
    started in between), then only convzoo's own files are removed and the marker is written.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()
        check_run_dir(out, overwrite)
        for entry in out.iterdir():
            if entry.name != LOCK:
                entry.unlink()
        write_json(out / MARKER, {"format": MARKER_FORMAT})
    except BaseException:
        if created:
            remove_run_dir(out, lock)
        raise
    return created


def remove_run_dir(out: Path, lock: RunLock) -> None:
    """Remove a run directory this process created and still holds (a run that failed before its first epoch)."""
    for entry in out.iterdir():
        if entry.name in RUN_FILES or is_temporary(entry.name):
            entry.unlink(missing_ok=True)
    lock.release()
    try:
        out.rmdir()
    except OSError:  # something else appeared in it: leave it
        pass


def write_config(out: Path, config: TrainConfig, model: nn.Module, device: torch.device, command: str | None) -> None:
    """Write a new run's ``config.json``: the resolved config, the model's arguments, versions, device, command."""
    write_json(out / "config.json", {
        "format": FORMAT, "config": asdict(config), "model": model.config, "versions": versions(),
        "device": str(device), "device_name": device_name(device),
        "command": command or " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def update_config(out: Path, config: TrainConfig) -> None:
    """Record a resumed run's config (a new ``--epochs`` or ``--lr``) in its ``config.json``."""
    meta = json.loads((out / "config.json").read_text())
    if meta.get("config") != asdict(config):
        write_json(out / "config.json", {**meta, "config": asdict(config)})


def read_run_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory, checked for this format version; ``["config"]`` is a ``TrainConfig``."""
    if Path(run_dir).is_file():
        refuse_pickle(run_dir)
        raise ConfigError(f"{run_dir} is a file; give the run directory that holds config.json and model.safetensors")
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a convzoo run directory (no config.json)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ConfigError(f"{path} is of format {found!r}, this convzoo reads {FORMAT!r}")
    meta["config"] = config_from_dict(meta.get("config"), str(path))
    model = meta.get("model")
    if not isinstance(model, dict) or model.get("name") != meta["config"].model:
        raise ConfigError(f"{path} has no model description matching its configuration ({meta['config'].model}); "
                          "the file was edited or damaged")
    return meta


def metrics_text(history: list[dict]) -> str:
    """``metrics.jsonl``'s content: one JSON object per epoch."""
    return "".join(json.dumps(row) + "\n" for row in history)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (one per completed epoch)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no metrics.jsonl (not a convzoo run directory, or no epoch completed)")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{path} is not valid JSON lines ({exc})") from None
    for i, row in enumerate(rows):
        missing = [key for key in METRIC_KEYS if not _is_number(row.get(key) if isinstance(row, dict) else None)]
        if missing:
            raise RunFileError(f"{path}: line {i + 1} is not a row of metrics (no number for {', '.join(missing)}); "
                               "the file was edited or damaged")
    return rows


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """Write ``metrics.jsonl`` unless it already holds exactly ``history``."""
    path, text = run_dir / "metrics.jsonl", metrics_text(history)
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)


def read_result(run_dir: str | Path) -> dict:
    """A finished run's ``result.json``: ``run_dir, test_acc, train_seconds, epochs, per_class_accuracy``."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no result.json: the run has not finished "
                           f"(continue it with 'convzoo train --resume {run_dir}')")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunFileError(f"{path} is not valid JSON") from None
    missing = [key for key in RESULT_KEYS if not _is_number(result.get(key) if isinstance(result, dict) else None)]
    if missing:
        raise RunFileError(f"{path} has no number for {', '.join(missing)}; the file was edited or damaged "
                           f"(re-create it with 'convzoo eval {run_dir}' and a new run, or restore it)")
    return result


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def train_seconds(history: list[dict]) -> float:
    """A run's time: its epochs' training and evaluation seconds."""
    return sum(row["seconds"] + row.get("eval_seconds", 0) for row in history)


def run_label(run_dir: str | Path) -> str:
    """A run's name in legends and tables: its directory name."""
    return Path(run_dir).resolve().name


def resume_hint(run_dir: Path | None) -> str:
    """What the run directory keeps and the command that continues it."""
    if run_dir is None or not (run_dir / "config.json").is_file():
        return "nothing was written"
    epochs = saved_epoch(run_dir / "checkpoint.safetensors") or 0
    if epochs == 0:  # a run directory this run created is removed when it fails before its first epoch
        return "no epoch was completed, so nothing was kept"
    return (f"{run_dir} keeps {epochs} completed epoch{'s' if epochs != 1 else ''}; "
            f"continue with: convzoo train --resume {shlex.quote(str(run_dir))}")


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


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[TrainConfig, nn.Module, torch.device]:
    """The config and trained model of a run directory, on ``device``, prepared as in training.

    The weights must be those of the run's configuration: a ``model.safetensors`` of another model or
    input size (a file copied from another run) is refused rather than evaluated as if it were this run.
    """
    config = read_run_config(run_dir)["config"]
    dev = resolve_device(device)
    path = Path(run_dir) / "model.safetensors"
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no model.safetensors: the run has not finished "
                           f"(continue it with 'convzoo train --resume {run_dir}')")
    model = load_model(path, dev)
    stored = (model.config.get("name"), model.config.get("input_size"))
    if stored != (config.model, config.resize):
        raise RunFileError(f"{path} holds a {stored[0]} for {stored[1]}x{stored[1]} inputs, but {run_dir}/config.json "
                           f"describes a {config.model} for {config.resize}x{config.resize}: the files come from "
                           "different runs")
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return config, model, dev


def evaluation_split(config: TrainConfig, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels a run with ``config`` is evaluated on (uint8 ``(N, 28, 28)``, int64 ``(N,)``)."""
    images, labels = load_split("test", data_dir or config.data_dir)
    return images[: config.limit_test], labels[: config.limit_test]


def evaluate_model(config: TrainConfig, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   device: torch.device, progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """``model`` scored on ``images`` as the run with ``config`` evaluated (batch size, input size, TTA, autocast);
    ``progress(done, total)`` after each batch."""
    batches = Batches(images, labels, config.eval_batch_size, device=device, resize=config.resize,
                      channels_last=config.channels_last)
    return evaluate(model, batches, config.amp, config.tta, progress=progress)


def evaluate_run(run_dir: str | Path, device: str = "auto", data_dir: str | None = None) -> Evaluation:
    """Evaluate a run's final model on the test images it was evaluated on in training."""
    config, model, dev = load_run(run_dir, device)
    return evaluate_model(config, model, *evaluation_split(config, data_dir), dev)


@dataclass
class RunRecord:
    """A finished run as objects: what its report shows. Training builds it from memory, ``load_record`` from disk."""

    run_dir: Path
    meta: dict  # config.json, its "config" a TrainConfig
    history: list[dict]
    model: nn.Module
    evaluation: Evaluation
    images: torch.Tensor  # the evaluated test images, uint8 (N, 28, 28), and their labels
    labels: torch.Tensor

    @property
    def config(self) -> TrainConfig:
        return self.meta["config"]


def load_record(run_dir: str | Path, device: str = "auto", data_dir: str | None = None) -> RunRecord:
    """A finished run read back from its directory, evaluated again on ``device``."""
    run_dir = Path(run_dir)
    meta = read_run_config(run_dir)
    history = read_metrics(run_dir)
    config, model, dev = load_run(run_dir, device)
    images, labels = evaluation_split(config, data_dir)
    return RunRecord(run_dir, meta, history, model, evaluate_model(config, model, images, labels, dev), images, labels)
