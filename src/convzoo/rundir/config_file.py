"""``config.json``: a run's resolved configuration, its model's arguments, its data, versions, device and command.

``"data"`` is what the run trained on (``DataSet.describe()``: the set or folder, the class names
in label order, channels, size, split); a run written before ``--data`` has none and trained on
Fashion-MNIST, which ``read_run_config`` fills in.

Written when the run directory is created, updated when a resumed run changes ``epochs``, ``lr`` or
where it runs, and read back checked: every key of a hand-edited or damaged file must have its type.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import FORMAT, refuse_pickle
from ..config import TrainConfig, config_from_dict
from ..data import FASHION_DESCRIPTION
from ..errors import RunFileError
from ..fileio import write_json
from ..runtime import device_name, versions
from .layout import CONFIG

# The keys besides "config" and "model", each with its type (older files may lack them).
_TEXT_KEYS = ("device", "device_name", "command", "created")


def write_config(run_dir: Path, config: TrainConfig, model: nn.Module, device: torch.device,
                 command: str | None, data: dict | None = None) -> None:
    """Write a new run's ``config.json``: the resolved config, the model's arguments, the data's description
    (``DataSet.describe()``; default Fashion-MNIST's), versions, device, command."""
    write_json(run_dir / CONFIG, {
        "format": FORMAT, "config": asdict(config), "model": model.config,
        "data": data if data is not None else FASHION_DESCRIPTION, "versions": versions(),
        "device": str(device), "device_name": device_name(device),
        "command": command or " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def update_config(run_dir: Path, config: TrainConfig) -> None:
    """Record a resumed run's config (a new ``epochs`` or ``lr``) in its ``config.json``."""
    meta = json.loads((run_dir / CONFIG).read_text())
    if meta.get("config") != asdict(config):
        write_json(run_dir / CONFIG, {**meta, "config": asdict(config)})


def read_run_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory, checked for this format version and for the type of every key;
    ``["config"]`` is a ``TrainConfig``, ``["data"]`` the data's description (Fashion-MNIST's for a run written
    before ``--data``)."""
    if Path(run_dir).is_file():
        refuse_pickle(run_dir)
        raise RunFileError(f"{run_dir} is a file; give the run directory that holds config.json and "
                           "model.safetensors")
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunFileError(f"{run_dir} is not a convzoo run directory (no config.json)")
    try:
        meta = json.loads(path.read_bytes())
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or a number of more than 4,300 digits
        raise RunFileError(f"{path} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise RunFileError(f"{path} is of format {found!r}, this convzoo reads {FORMAT!r}")
    meta["config"] = config_from_dict(meta.get("config"), str(path))
    model = meta.get("model")
    if not isinstance(model, dict) or model.get("name") != meta["config"].model:
        raise RunFileError(f"{path} has no model description matching its configuration ({meta['config'].model}); "
                           "the file was edited or damaged")
    bad = [key for key in _TEXT_KEYS if key in meta and not isinstance(meta[key], str)]
    meta.setdefault("data", FASHION_DESCRIPTION)
    if not _data_matches(meta["data"], model):
        bad.append("data")
    found = meta.get("versions", {})
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        bad.append("versions")
    if bad:
        raise RunFileError(f"{path} has values of the wrong type for {', '.join(bad)}; the file was edited or damaged")
    return meta


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _data_matches(data: object, model: dict) -> bool:
    """Whether a ``"data"`` entry is well-formed and fits the model: one class name per output, its channels."""
    if not isinstance(data, dict):
        return False
    classes, channels = data.get("classes"), data.get("channels")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        return False
    if channels not in (1, 3) or not _count(data.get("size")):
        return False
    return len(classes) == model.get("num_classes", 10) and channels == model.get("in_channels", 1)


def run_classes(meta: dict) -> tuple[str, ...]:
    """The class names of a run (``read_run_config``'s result), in label order."""
    return tuple(meta["data"]["classes"])
