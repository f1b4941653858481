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
import math
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

from .errors import UserError, first_line
from .fileio import write_bytes
from .models import rebuild
from .tensorfile import CheckpointError, read_header, read_tensors, refuse_pickle  # noqa: F401  (re-exported)

FORMAT = "convzoo-1"

# What every row of a run's history holds (``convzoo.train.fit`` writes more), besides the accuracy the epoch
# was scored with: on the test set (``test_acc``), or on the validation split a run holds out (``val_acc``).
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "seconds", "eval_seconds")
SCORED_ON = {"test_acc": "test", "val_acc": "validation"}
SHORT = {"test": "test", "validation": "val"}  # a split's name in a compact line: ``val acc 0.8812``


def epoch_score(row: dict) -> tuple[str, float]:
    """What an epoch of a run's history was scored on (``"test"`` or ``"validation"``) and its accuracy."""
    key = next((key for key in SCORED_ON if key in row), "test_acc")
    return SCORED_ON[key], row[key]


def is_history_row(row: object) -> bool:
    """Whether ``row`` holds a number for each of ``HISTORY_KEYS`` and for exactly one of ``SCORED_ON``'s keys."""
    if not isinstance(row, dict):
        return False
    numbers = {key for key, value in row.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
    return set(HISTORY_KEYS) <= numbers and len(numbers & set(SCORED_ON)) == 1


def _check_entries(expected: dict[str, torch.Tensor], entries: dict, path: str | Path, what: str) -> None:
    """``CheckpointError`` unless ``entries`` (``read_header``'s) are exactly ``expected``'s names, dtypes, shapes."""
    missing, extra = sorted(set(expected) - set(entries)), sorted(set(entries) - set(expected))
    if missing or extra:
        found = f"lacks {', '.join(missing[:3])}" if missing else f"has unexpected {', '.join(extra[:3])}"
        raise CheckpointError(f"{path} does not match {what}: it {found}")
    for key, tensor in expected.items():
        dtype, shape = entries[key]
        if shape != tuple(tensor.shape) or dtype != tensor.dtype:
            raise CheckpointError(f"{path} does not match {what}: {key} is {dtype} {shape}, "
                                  f"the model has {tensor.dtype} {tuple(tensor.shape)}")


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of ``path`` and its metadata (``tensorfile.read_tensors``), checked against the checksum; call
    after ``read_header``."""
    tensors, metadata = read_tensors(path)
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
    """Serialize in memory, then write the bytes through ``fileio``: a full disk is an ``OSError`` there
    (a ``FileSystemError`` naming the file), never safetensors' own error, and the temporary file goes."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_bytes(path, save(tensors, metadata={"format": FORMAT, **metadata, "sha256": _digest(tensors)}))


def _json(metadata: dict[str, str], key: str, path: str | Path) -> object:
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no valid {key!r} metadata") from None


def saved_epoch(path: str | Path) -> int | None:
    """The number of completed epochs a ``checkpoint.safetensors`` holds (read from its header); None if unreadable."""
    try:
        _, metadata = read_header(path)
        return int(metadata["epoch"]) if metadata.get("format") == FORMAT else None
    except (CheckpointError, ValueError, KeyError):
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


def save_model(path: str | Path, model: nn.Module) -> None:
    """Write ``model``'s weights and its ``config`` (from ``create_model``) to ``path``."""
    _write(path, dict(model.state_dict()), {"model": json.dumps(model.config)})


def load_model(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model stored by ``save_model`` (in evaluation mode, on ``device``).

    The names, dtypes and shapes in the file's header are compared with the model (built on the
    meta device) before any tensor is read: an unrelated or oversized file costs no memory.
    """
    entries, metadata = _convzoo_header(path)
    model = build_from_config(_json(metadata, "model", path), path)
    _assign(path, model, entries)
    return model.to(device).eval()


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Assign the weights of a ``save_model`` file to ``model`` (built from a run's configuration, on any device).

    The file's model must be ``model``'s (name and arguments, e.g. a weights file copied from another
    run is refused) and every tensor must have its parameter's shape and dtype.
    """
    entries, metadata = _convzoo_header(path)
    stored = _json(metadata, "model", path)
    if stored != model.config:
        raise CheckpointError(f"{path} holds {_described(stored)}, but its run describes {_described(model.config)}: "
                              "the files come from different runs")
    _assign(path, model, entries)


def _convzoo_header(path: str | Path) -> tuple[dict, dict[str, str]]:
    """``read_header`` of a file this format's ``save_model`` wrote (else ``CheckpointError``)."""
    entries, metadata = read_header(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convzoo {FORMAT} file (format {metadata.get('format')!r})")
    return entries, metadata


def _assign(path: str | Path, model: nn.Module, entries: dict) -> None:
    """The file's tensors assigned to ``model``, once the header's names, dtypes and shapes are the model's: an
    unrelated file costs no memory."""
    _check_entries(model.state_dict(), entries, path, "its model")
    model.load_state_dict(_read(path)[0], strict=True, assign=True)


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
    entries, metadata = read_header(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convzoo {FORMAT} file (format {metadata.get('format')!r})")
    if _json(metadata, "model", path) != model.config:
        raise CheckpointError(f"{path} belongs to another model ({metadata.get('model')})")
    _check_state_entries(entries, model, optimizer, path)
    tensors, metadata = _read(path)
    try:
        epoch, history = _parse_progress(metadata, path)
        optimizer_state = _parse_optimizer_state(tensors, _json(metadata, "optimizer", path), optimizer)
        rng = _parse_rng(tensors)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a valid convzoo checkpoint ({type(exc).__name__}: {exc})") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    groups = optimizer.state_dict()["param_groups"]  # the run's own hyperparameters
    try:
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path} has an optimizer state that does not fit this run ({exc})") from None
    torch.set_rng_state(rng[0])
    if len(rng) > 1 and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng[1 : 1 + torch.cuda.device_count()])
    return epoch, history


# Optimizer states that are a tensor shaped like the parameter (SGD's, AdamW's); ``step`` is one number.
PARAMETER_SHAPED_STATES = frozenset({"momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})
MAX_RNG_BYTES = 1 << 16  # a generator state: the CPU's is 5,056 bytes, a CUDA device's 16


def _check_state_entries(entries: dict, model: nn.Module, optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """The header of a checkpoint against ``model`` and ``optimizer``, before a tensor is read.

    The weights must be the model's; an optimizer state may be only what ``snapshot_state``
    writes for one of the optimizer's parameters; the generator states are small uint8 vectors.
    """
    weights = {k[6:]: v for k, v in entries.items() if k.startswith("model.")}
    _check_entries(model.state_dict(), weights, path, "its model")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, (dtype, shape) in entries.items():
        if key.startswith("model."):
            continue
        if key.startswith("rng."):
            if dtype != torch.uint8 or len(shape) != 1 or shape[0] > MAX_RNG_BYTES:
                raise CheckpointError(f"{path} is not a valid convzoo checkpoint ({key} is {dtype} {shape}, "
                                      "not a generator state)")
            continue
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "optim" or not parts[1].isdigit() or int(parts[1]) >= len(params):
            raise CheckpointError(f"{path} is not a valid convzoo checkpoint ({key} names no state of this "
                                  f"run's {len(params)} parameters)")
        _check_optimizer_tensor(key, dtype, shape, params[int(parts[1])], path)


def _check_optimizer_tensor(key: str, dtype: torch.dtype, shape: tuple, param: torch.Tensor, path: str | Path) -> None:
    name = key.split(".", 2)[2]
    if name == "step":
        fits = dtype.is_floating_point and math.prod(shape) == 1 and len(shape) <= 1
    elif name in PARAMETER_SHAPED_STATES:
        fits = dtype == param.dtype and shape == tuple(param.shape)
    else:
        fits = dtype.is_floating_point and shape in ((), tuple(param.shape))
    if not fits:
        raise CheckpointError(f"{path} has an optimizer state that does not fit this run: {key} is {dtype} {shape}, "
                              f"its parameter {param.dtype} {tuple(param.shape)}")


def _parse_progress(metadata: dict[str, str], path: str | Path) -> tuple[int, list[dict]]:
    epoch = int(metadata["epoch"])
    history = _json(metadata, "history", path)
    if epoch < 0 or not isinstance(history, list) or len(history) != epoch:
        raise ValueError(f"epoch {epoch} does not match its history")
    for i, row in enumerate(history):
        if not is_history_row(row) or row["epoch"] != i + 1:
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
        shaped = sorted(k for k, v in values.items() if k in PARAMETER_SHAPED_STATES and v is not None)
        if shaped:
            raise ValueError(f"optimizer state {index!r} has plain numbers for {', '.join(shaped)}, which are "
                             "tensors shaped like the parameter")
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
