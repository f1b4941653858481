"""Weights and training state in safetensors files: opening one never runs code.

* ``model.safetensors``: the weights, with the model's name and builder arguments in the file's
  metadata, so ``load_model(path)`` rebuilds the network with nothing else at hand.
* ``checkpoint.safetensors``: everything a run needs to continue after its last completed
  epoch (weights, optimizer state, random generator states, metric history), in one file
  written atomically, so it is always consistent.

Pickle-based ``.pt`` files are refused without being unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import UserError
from .io import atomic_path
from .models import create_model

FORMAT = "convzoo-1"


class CheckpointError(UserError):
    """A weights or checkpoint file that is missing, corrupt, tampered with, or of another kind."""


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..) holding a pickle; older files are a bare pickle (0x80).
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(f"{path} is a pickle-based PyTorch file; convzoo only opens safetensors files "
                              "(a pickle can run code when it is opened)")


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convzoo {FORMAT} file (format {metadata.get('format')!r})")
    return tensors, metadata


def _write(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, **metadata})


def _json(metadata: dict[str, str], key: str, path: str | Path) -> object:
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no valid {key!r} metadata") from None


def build_from_config(config: dict, path: str | Path = "the run") -> nn.Module:
    """Rebuild a model from the ``model.config`` a file stored; a bad config is a ``CheckpointError``."""
    if not isinstance(config, dict) or "name" not in config:
        raise CheckpointError(f"{path} has no model name in its configuration")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    try:
        return create_model(config["name"], **kwargs)
    except UserError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise CheckpointError(f"{path} has an invalid model configuration: {exc}") from None


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not match its model: {first}") from None


def save_model(path: str | Path, model: nn.Module) -> None:
    """Write ``model``'s weights and its ``config`` (from ``create_model``) to ``path``."""
    _write(path, dict(model.state_dict()), {"model": json.dumps(model.config)})


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model stored by ``save_model`` (in evaluation mode, on ``device``)."""
    tensors, metadata = _read(path)
    model = build_from_config(_json(metadata, "model", path), path)  # type: ignore[arg-type]
    _load_weights(model, tensors, path)
    return model.to(device).eval()


def save_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int, history: list[dict]
) -> None:
    """Everything needed to resume after ``epoch`` completed epochs, in one atomic file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    plain_state: dict[str, dict] = {}
    for index, values in opt["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value
            else:
                plain_state.setdefault(str(index), {})[name] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    metadata = {
        "model": json.dumps(model.config),
        "epoch": str(epoch),
        "history": json.dumps(history),
        "optimizer": json.dumps({"param_groups": opt["param_groups"], "state": plain_state}),
    }
    _write(path, tensors, metadata)


def load_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Restore what ``save_state`` wrote into ``model`` and ``optimizer``; returns ``(epoch, history)``."""
    tensors, metadata = _read(path)
    if _json(metadata, "model", path) != model.config:
        raise CheckpointError(f"{path} belongs to another model ({metadata.get('model')})")
    _load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    opt_meta = _json(metadata, "optimizer", path)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in opt_meta.get("state", {}).items():  # type: ignore[union-attr]
        state.setdefault(int(index), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})  # type: ignore[index]
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has an optimizer state that does not fit this run ({exc})") from None
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    try:
        return int(metadata["epoch"]), list(_json(metadata, "history", path))  # type: ignore[arg-type]
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} has no valid epoch") from None
