"""The cache of decoded folders: one file per folder holding its uint8 images, checked on every read.

A cache file is ``MAGIC``, a 4-byte length, a JSON header, then the payload: the images
``(N, C, S, S)`` uint8, the labels int64, the splits uint8 and an 8-byte digest of each image's
pixels (for finding the same image in both splits). The header holds the *key* (a SHA-256 of the
folder's resolved path, every file's relative name, label, split, size and mtime, and the options
that change the decoded array), the shapes, the relative names kept and the CRC-32 of the payload.

``load_arrays`` trusts a file only when its key is the folder's key now, its length is exactly what
its header says and its payload's CRC-32 matches (about 35 ms per 55 MB on one core, a fraction of
reading it): anything else is reported and decoded again. Writes are atomic; a cache that cannot be
written is skipped. The files live in ``cache_root() / "folders"``, one per folder and options;
deleting them is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path
from .idx import cache_root

MAGIC = b"CZARRAY1"
_VERSION = 1  # of the decoding rules: a change to them must change the key


@dataclass(frozen=True)
class Arrays:
    """A decoded folder: ``images`` (N, C, S, S) uint8, ``labels`` int64, ``splits`` uint8 (0 train, 1 test)."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    digests: np.ndarray  # uint64 (N,): a hash of each image's pixels
    paths: tuple[str, ...]  # relative names of the images kept, in order
    notes: tuple[str, ...] = ()  # warnings from decoding (images skipped), repeated on every read


def row_digests(images: np.ndarray) -> np.ndarray:
    """An 8-byte BLAKE2b digest of each image's pixels, as uint64 (N,)."""
    rows = images.reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little")
                     for r in rows], dtype=np.uint64)


def folder_key(root: Path, paths, labels, splits, stats, grayscale: bool, size: int | None) -> str:
    """The SHA-256 that names a folder's exact state and the options it is decoded with."""
    h = hashlib.sha256(f"{_VERSION} {grayscale} {size}\0".encode())
    h.update(os.fsencode(root.resolve()) + b"\0")
    for path, label, split, (st_size, mtime) in zip(paths, labels, splits, stats):
        h.update(os.fsencode(path) + f"\0{label} {split} {st_size} {mtime}\0".encode())
    return h.hexdigest()


def cache_file(root: Path) -> Path:
    """Where the decoded arrays of folder ``root`` are kept (one file per folder; options are in the key)."""
    return cache_root() / "folders" / f"{hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:24]}.czarr"


def _payload_layout(n: int, c: int, s: int) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    return [("images", np.dtype(np.uint8), (n, c, s, s)), ("labels", np.dtype(np.int64), (n,)),
            ("splits", np.dtype(np.uint8), (n,)), ("digests", np.dtype(np.uint64), (n,))]


def _parse(data: memoryview, key: str) -> Arrays | str:
    """The arrays in a cache file's bytes, or why they cannot be trusted."""
    if bytes(data[: len(MAGIC)]) != MAGIC or len(data) < len(MAGIC) + 4:
        return "not a convzoo array cache"
    start = len(MAGIC) + 4
    length = int.from_bytes(data[len(MAGIC) : start], "little")
    try:
        header = json.loads(bytes(data[start : start + length]))
        n, c, s = (int(header[k]) for k in ("n", "c", "s"))
        crc, paths, notes = int(header["crc32"]), tuple(header["paths"]), tuple(header["notes"])
    except (ValueError, KeyError, TypeError):
        return "its header is damaged"
    if header.get("key") != key:
        return "it was made from another state of the folder"
    layout = _payload_layout(n, c, s)
    payload = data[start + length :]
    if len(payload) != sum(d.itemsize * np.prod(shape) for _, d, shape in layout) or len(paths) != n:
        return "its length is not the one its header declares"
    if zlib.crc32(payload) != crc:
        return "its data does not match its checksum"
    arrays, offset = {}, 0
    for name, dtype, shape in layout:
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += count * dtype.itemsize
    return Arrays(paths=paths, notes=notes, **arrays)


def load_arrays(root: Path, key: str) -> tuple[Arrays | None, str | None]:
    """The cached arrays of ``root`` if they are ``key``'s; else ``(None, why)`` (why None when there is no cache)."""
    path = cache_file(root)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buffer = np.empty(size, dtype=np.uint8)
            got = f.readinto(buffer)
    except FileNotFoundError:
        return None, None
    except (OSError, MemoryError) as e:
        return None, f"cache {path} cannot be read ({e})"
    parsed = _parse(memoryview(buffer[:got]), key)
    if isinstance(parsed, str):
        stale = parsed.startswith("it was made")
        return None, None if stale else f"cache {path} is not used: {parsed}"
    return parsed, None


def save_arrays(root: Path, key: str, arrays: Arrays) -> Path | None:
    """Write ``arrays`` as ``root``'s cache (atomically); None when the cache cannot be written."""
    parts = [np.ascontiguousarray(a) for a in (arrays.images, arrays.labels.astype(np.int64),
                                                arrays.splits.astype(np.uint8), arrays.digests.astype(np.uint64))]
    crc = 0
    for part in parts:
        crc = zlib.crc32(memoryview(part).cast("B"), crc)
    n, c, s = arrays.images.shape[0], arrays.images.shape[1], arrays.images.shape[-1]
    header = json.dumps({"key": key, "n": n, "c": c, "s": s, "crc32": crc, "paths": list(arrays.paths),
                         "notes": list(arrays.notes)}, ensure_ascii=True).encode()
    path = cache_file(root)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(4, "little") + header)
            for part in parts:
                f.write(memoryview(part).cast("B"))
    except (OSError, UserError):
        return None  # read-only or full: the next read decodes again
    return path
