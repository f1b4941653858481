"""A safetensors file read within bounds: its header first (names, dtypes, shapes, what the tensors will cost),
then its tensors, each into memory of its own size. Opening a file never runs code: pickle-based PyTorch
files are sniffed and refused, never unpickled.

``convzoo.checkpoint`` reads weights and training state through these, after comparing the header with
the model (and the optimizer) the file is meant for.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .errors import UserError, first_line


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


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of ``path`` and its metadata; call after ``read_header`` (checked against what is expected).

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
    return tensors, metadata


