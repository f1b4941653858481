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
import os
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

from .errors import UserError, first_line
from .fileio import write_bytes
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


# The largest header convzoo reads: names, dtypes and shapes of a few hundred tensors, and the
# metadata (the model's configuration, the history of up to a million epochs).
MAX_HEADER_BYTES = 256 << 20

# safetensors' dtype names, as torch knows them.
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


def read_header(path: str | Path) -> tuple[dict[str, tuple[torch.dtype, tuple[int, ...]]], dict[str, str]]:
    """``({name: (dtype, shape)}, metadata)`` from a safetensors file's header; no tensor is read.

    Reads the 8-byte length and at most ``MAX_HEADER_BYTES`` of JSON, and checks that the tensors
    it declares tile the rest of the file exactly (so the file is no larger than its header says):
    what the tensors will cost is known, and can be compared with a model, before a byte of them
    is read. Anything else is a ``CheckpointError``.
    """
    entries, metadata, _ = _header(path)
    return {name: (dtype, shape) for name, (dtype, shape, _) in entries.items()}, metadata


def _header(path: str | Path) -> tuple[dict[str, tuple[torch.dtype, tuple[int, ...], int]], dict[str, str], int]:
    """``read_header``'s entries with each tensor's offset in the data, the metadata, where the data starts."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    refuse_pickle(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"{path} is not a safetensors file of convzoo: its header would be {length:,} "
                                      f"bytes (the file has {size:,}; at most {MAX_HEADER_BYTES:,} are read)")
            text = f.read(length)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({first_line(exc)})") from None
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or a number of more than 4,300 digits
        raise CheckpointError(f"{path} is not a readable safetensors file (its header is not JSON)") from None
    entries, metadata = _parse_header(header, size - 8 - length, path)
    return entries, metadata, 8 + length


def _parse_header(header: object, data_bytes: int, path: Path) -> tuple[dict, dict[str, str]]:
    """The header's tensors as ``{name: (dtype, shape, offset)}``, checked to tile ``data_bytes`` exactly."""
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a readable safetensors file (its header is not a mapping)")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path} is not a readable safetensors file (its metadata is not text)")
    entries: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            if not all(type(n) is int and n >= 0 for n in (*shape, begin, end)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} is not a readable safetensors file (tensor {name!r} is not described "
                                  "by a known dtype, a shape and two offsets)") from None
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(f"{path} is not a readable safetensors file (tensor {name!r} has "
                                  f"{end - begin:,} bytes for {dtype} {shape})")
        entries[name] = (dtype, shape, begin)
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            break
        covered = end
    if covered != data_bytes:
        raise CheckpointError(f"{path} is not a readable safetensors file: its header describes tensors of "
                              f"{covered:,} bytes that do not fill the {data_bytes:,} bytes after it")
    return entries, metadata


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
    """Every tensor of ``path`` and its metadata, checked against the checksum; call after ``read_header``.

    The tensors are read by Python at the header's offsets, each into its own tensor: the memory
    is exactly theirs, and any path opens (safetensors' reader needs the path to be UTF-8).
    """
    path = Path(path)
    entries, metadata, start = _header(path)
    tensors = {}
    try:
        with open(path, "rb") as f:
            for name, (dtype, shape, offset) in sorted(entries.items(), key=lambda item: item[1][2]):
                tensor = torch.empty(shape, dtype=dtype)
                buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
                f.seek(start + offset)
                if f.readinto(buffer) != len(buffer):
                    raise CheckpointError(f"{path} is truncated: tensor {name!r} ends past the end of the file")
                tensors[name] = tensor
    except OSError as exc:
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
    """Rebuild the model stored by ``save_model`` (in evaluation mode, on ``device``).

    The names, dtypes and shapes in the file's header are compared with the model (built on the
    meta device) before any tensor is read: an unrelated or oversized file costs no memory.
    """
    entries, metadata = read_header(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convzoo {FORMAT} file (format {metadata.get('format')!r})")
    model = build_from_config(_json(metadata, "model", path), path)
    _check_entries(model.state_dict(), entries, path, "its model")
    tensors, metadata = _read(path)
    _load_weights(model, tensors, path, assign=True)
    return model.to(device).eval()


def load_weights(path: str | Path, model: nn.Module) -> None:
    """Assign the weights of a ``save_model`` file to ``model`` (built from a run's configuration, on any device).

    The file's model must be ``model``'s (name and arguments, e.g. a weights file copied from another
    run is refused) and every tensor must have its parameter's shape and dtype.
    """
    entries, metadata = read_header(path)  # names, dtypes and shapes first: an unrelated file costs no memory
    stored = _json(metadata, "model", path)
    if stored != model.config:
        raise CheckpointError(f"{path} holds {_described(stored)}, but its run describes {_described(model.config)}: "
                              "the files come from different runs")
    _check_entries(model.state_dict(), entries, path, "its model")
    _load_weights(model, _read(path)[0], path, assign=True)


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
