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

import json
import shlex
import shutil
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from .checkpoint import FORMAT, load_model, refuse_pickle, saved_epoch
from .config import TrainConfig, config_from_dict
from .data import Batches, load_split
from .errors import ConfigError, RunFileError
from .evaluate import Evaluation, evaluate
from .fileio import write_json, write_text
from .runtime import device_name, resolve_device, versions


def check_run_dir(out: str | Path, overwrite: bool = False) -> None:
    """Refuse ``out`` if it is a file, or a non-empty directory that ``overwrite`` may not replace."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already exists; use --resume {out} to continue it, --overwrite to replace it, "
                              "or another --out")
        if not (out / "config.json").is_file():
            raise ConfigError(f"refusing to overwrite {out}: it is not a convzoo run directory")


def prepare_run_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Create ``out``; an existing non-empty directory is refused unless ``overwrite`` (a run's only)."""
    check_run_dir(out, overwrite)
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


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
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path} is not valid JSON lines ({exc})") from None


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
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RunFileError(f"{path} is not valid JSON") from None


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
    return (f"{run_dir} keeps {epochs} completed epoch{'s' if epochs != 1 else ''}; "
            f"continue with: convzoo train --resume {shlex.quote(str(run_dir))}")


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[TrainConfig, nn.Module, torch.device]:
    """The config and trained model of a run directory, on ``device``, prepared as in training."""
    config = read_run_config(run_dir)["config"]
    dev = resolve_device(device)
    model = load_model(Path(run_dir) / "model.safetensors", dev)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return config, model, dev


def evaluation_split(config: TrainConfig, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels a run with ``config`` is evaluated on (uint8 ``(N, 28, 28)``, int64 ``(N,)``)."""
    images, labels = load_split("test", data_dir or config.data_dir)
    return images[: config.limit_test], labels[: config.limit_test]


def evaluate_run(run_dir: str | Path, device: str = "auto", data_dir: str | None = None) -> Evaluation:
    """Evaluate a run's final model on the test images it was evaluated on in training."""
    config, model, dev = load_run(run_dir, device)
    images, labels = evaluation_split(config, data_dir)
    batches = Batches(images, labels, config.eval_batch_size, device=dev, resize=config.resize,
                      channels_last=config.channels_last)
    return evaluate(model, batches, config.amp, config.tta)
