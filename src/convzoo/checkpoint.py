"""Weights and training state in safetensors files: opening one never runs code.

* ``model.safetensors``: the weights, with the model's name and builder arguments in the file's
  metadata, so ``load_model(path)`` rebuilds the network with nothing else at hand.
* ``checkpoint.safetensors``: everything a run needs to continue after its last completed
  epoch (weights, optimizer state, random generator states, metric history), in one file
  written atomically, so it is always consistent.

Pickle-based ``.pt`` files are refused without being unpickled. Everything read from a file is
checked before it is used: a truncated, corrupted or tampered file raises ``CheckpointError``
(tests/test_reliability.py fuzzes both loaders). Each file's metadata holds the SHA-256 of its
tensors, so a flipped bit in the weights is caught too (it guards against corruption, not against
someone who rewrites the file); a model is built on the meta device and compared with the file's
tensors before any memory is allocated for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import UserError, first_line
from .fileio import atomic_path
from .models import rebuild

FORMAT = "convzoo-1"

# What every row of a run's history holds (``convzoo.train.fit`` writes more).
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "seconds", "eval_seconds")


class CheckpointError(UserError):
    """A weights or checkpoint file that is missing, corrupt, tampered with, or of another kind."""


def refuse_pickle(path: str | Path) -> None:
    """Raise ``CheckpointError`` if ``path`` is a pickle-based PyTorch file; it is sniffed, never unpickled.

    torch.save writes a zip archive (``PK\\x03\\x04``) holding a pickle; older files are a bare
    pickle (``\\x80`` and the protocol, 2 to 5). A safetensors file starts with its header's length
    (8 bytes, little-endian), which can begin with those same bytes, and then the header's ``{``.
    """
    with open(path, "rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if len(head) == 9 and head[8:] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise CheckpointError(f"{path} is a pickle-based PyTorch file; convzoo only opens safetensors files "
                              "(a pickle can run code when it is opened)")


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({first_line(exc)})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convzoo {FORMAT} file (format {metadata.get('format')!r})")
    if metadata.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path} is corrupt: its tensors do not match the checksum they were saved with")
    return tensors, metadata


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _write(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, **metadata, "sha256": _digest(tensors)})


def _json(metadata: dict[str, str], key: str, path: str | Path) -> object:
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no valid {key!r} metadata") from None


def saved_epoch(path: str | Path) -> int | None:
    """The number of completed epochs a ``checkpoint.safetensors`` holds (read from its header); None if unreadable."""
    try:
        refuse_pickle(path)
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return int(metadata["epoch"]) if metadata.get("format") == FORMAT else None
    except (CheckpointError, SafetensorError, OSError, ValueError, RuntimeError, TypeError, KeyError):
        return None


def build_from_config(config: object, path: str | Path = "the run") -> nn.Module:
    """Rebuild a model from the ``model.config`` a file stored, on the meta device (no memory yet).

    The arguments must be JSON scalars. ``load_model`` then checks every shape against the file
    before it assigns the file's tensors, so a tampered configuration cannot make convzoo allocate
    a network larger than the file. A bad configuration is a ``CheckpointError``.
    """
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise CheckpointError(f"{path} has no model name in its configuration")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    bad = [k for k, v in kwargs.items() if not isinstance(v, (int, str, bool))]
    if bad:
        raise CheckpointError(f"{path} has an invalid model configuration: {', '.join(map(repr, bad))}")
    try:
        with torch.device("meta"):
            return rebuild(config)
    except UserError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"{path} has an invalid model configuration: {first_line(exc)}") from None


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, *, assign: bool = False) -> None:
    """Load ``state`` after checking that it has exactly the model's keys, shapes and dtypes."""
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        what = f"lacks {', '.join(missing[:3])}" if missing else f"has unexpected {', '.join(extra[:3])}"
        raise CheckpointError(f"{path} does not match its model: it {what}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape or state[key].dtype != tensor.dtype:
            raise CheckpointError(f"{path} does not match its model: {key} is {state[key].dtype} "
                                  f"{tuple(state[key].shape)}, the model has {tensor.dtype} {tuple(tensor.shape)}")
    model.load_state_dict(state, strict=True, assign=assign)


def save_model(path: str | Path, model: nn.Module) -> None:
    """Write ``model``'s weights and its ``config`` (from ``create_model``) to ``path``."""
    _write(path, dict(model.state_dict()), {"model": json.dumps(model.config)})


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model stored by ``save_model`` (in evaluation mode, on ``device``)."""
    tensors, metadata = _read(path)
    model = build_from_config(_json(metadata, "model", path), path)
    _load_weights(model, tensors, path, assign=True)
    return model.to(device).eval()


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Assign the weights of a ``save_model`` file to ``model`` (built from a run's configuration, on any device).

    The file's model must be ``model``'s (name and arguments, e.g. a weights file copied from another
    run is refused) and every tensor must have its parameter's shape and dtype.
    """
    tensors, metadata = _read(path)
    stored = _json(metadata, "model", path)
    if stored != model.config:
        raise CheckpointError(f"{path} holds {_described(stored)}, but its run describes {_described(model.config)}: "
                              "the files come from different runs")
    _load_weights(model, tensors, path, assign=True)


def _described(config: object) -> str:
    """``a lenet for 28x28 inputs`` of a model's stored configuration."""
    if not isinstance(config, dict):
        return "no model description"
    size = config.get("input_size")
    return f"a {config.get('name')} for {size}x{size} inputs"


def save_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int, history: list[dict]
) -> None:
    """Everything needed to resume after ``epoch`` completed epochs, in one atomic file.

    The optimizer's per-parameter state is stored, not its hyperparameters: those come from the
    run's configuration, so a resumed run cannot pick up tampered ones.
    """
    write_state(path, snapshot_state(model, optimizer, epoch=epoch, history=history))


def snapshot_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int, history: list[dict]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What ``save_state`` writes, copied to the CPU now: training may go on while ``write_state`` writes it."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    plain_state: dict[str, dict] = {}
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value
            else:
                plain_state.setdefault(str(index), {})[name] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    # A copy, never a view of a live parameter (``.to("cpu")`` of a CPU tensor returns the tensor itself).
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    metadata = {
        "model": json.dumps(model.config),
        "epoch": str(epoch),
        "history": json.dumps(history),
        "optimizer": json.dumps({"state": plain_state}),
    }
    return tensors, metadata


def write_state(path: str | Path, snapshot: tuple[dict[str, torch.Tensor], dict[str, str]]) -> None:
    """Write a ``snapshot_state`` atomically (any thread may call this)."""
    _write(path, *snapshot)


def load_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Restore what ``save_state`` wrote into ``model`` and ``optimizer``; returns ``(epoch, history)``.

    Everything is checked before anything is restored; a file that is not what ``save_state``
    writes for this model and optimizer raises ``CheckpointError``.
    """
    tensors, metadata = _read(path)
    if _json(metadata, "model", path) != model.config:
        raise CheckpointError(f"{path} belongs to another model ({metadata.get('model')})")
    try:
        epoch, history = _parse_progress(metadata, path)
        optimizer_state = _parse_optimizer_state(tensors, _json(metadata, "optimizer", path), optimizer)
        rng = _parse_rng(tensors)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a valid convzoo checkpoint ({type(exc).__name__}: {exc})") from None
    _load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    groups = optimizer.state_dict()["param_groups"]  # the run's own hyperparameters
    try:
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path} has an optimizer state that does not fit this run ({exc})") from None
    torch.set_rng_state(rng[0])
    if len(rng) > 1 and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng[1 : 1 + torch.cuda.device_count()])
    return epoch, history


def _parse_progress(metadata: dict[str, str], path: str | Path) -> tuple[int, list[dict]]:
    epoch = int(metadata["epoch"])
    history = _json(metadata, "history", path)
    if epoch < 0 or not isinstance(history, list) or len(history) != epoch:
        raise ValueError(f"epoch {epoch} does not match its history")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or row.get("epoch") != i + 1 or not all(
            isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool) for k in HISTORY_KEYS
        ):
            raise ValueError(f"history row {i + 1} is not a row of metrics")
    return epoch, history


def _parse_optimizer_state(
    tensors: dict[str, torch.Tensor], meta: object, optimizer: torch.optim.Optimizer
) -> dict[int, dict]:
    """The per-parameter optimizer state: tensors shaped like their parameter (or scalars), plain numbers."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index_text, name = key.split(".", 2)
            index = int(index_text)
            if not 0 <= index < len(params):
                raise ValueError(f"{key} names no parameter")
            shape = params[index].shape
            if not value.is_floating_point() or (value.dim() and value.shape != shape):
                raise ValueError(f"{key} is {value.dtype} {tuple(value.shape)}, its parameter {tuple(shape)}")
            state.setdefault(index, {})[name] = value
    plain = meta.get("state") if isinstance(meta, dict) else None
    if not isinstance(plain, dict):
        raise ValueError("the optimizer metadata has no state mapping")
    for index, values in plain.items():
        if not 0 <= int(index) < len(params) or not isinstance(values, dict) or not all(
            v is None or isinstance(v, (int, float, bool)) for v in values.values()
        ):
            raise ValueError(f"optimizer state {index!r} is not plain numbers")
        state.setdefault(int(index), {}).update(values)
    return state


def _parse_rng(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The CPU generator state, then one per CUDA device, each checked to be a generator state."""
    cpu = tensors["rng.cpu"]
    if cpu.dtype != torch.uint8 or cpu.shape != torch.get_rng_state().shape:
        raise ValueError(f"rng.cpu is {cpu.dtype} {tuple(cpu.shape)}, not a generator state")
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    cuda = [tensors[k] for k in cuda_keys]
    if any(t.dtype != torch.uint8 or t.dim() != 1 for t in cuda):
        raise ValueError("a CUDA generator state is not a uint8 vector")
    return [cpu, *cuda]
