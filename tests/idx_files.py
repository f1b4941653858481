"""IDX bytes and data directories, written for the data tests (test_idx.py, test_source.py, test_reliability.py)."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path


def idx(dims: tuple[int, ...], payload: bytes | None = None, *, magic: bytes | None = None) -> bytes:
    """IDX bytes with the given header; payload defaults to the bytes 0, 1, 2, ... the dims call for."""
    if magic is None:
        magic = bytes([0, 0, 0x08, len(dims)])
    if payload is None:
        payload = bytes(i % 256 for i in range(math.prod(dims)))
    return magic + struct.pack(f">{len(dims)}I", *dims) + payload


def write(path: Path, content: bytes, *, gz: bool = True) -> Path:
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    return path


def make_dir(
    root: Path,
    *,
    n_train: int = 6,
    n_test: int = 4,
    train_labels: bytes | None = None,
    side: int = 28,
) -> Path:
    """A synthetic data directory with all four files; overrides make one of them wrong."""
    root.mkdir(parents=True, exist_ok=True)
    write(root / "train-images-idx3-ubyte.gz", idx((n_train, side, side)))
    labels = train_labels if train_labels is not None else bytes(i % 10 for i in range(n_train))
    write(root / "train-labels-idx1-ubyte.gz", idx((len(labels),), labels))
    write(root / "t10k-images-idx3-ubyte.gz", idx((n_test, 28, 28)))
    write(root / "t10k-labels-idx1-ubyte.gz", idx((n_test,), bytes(i % 10 for i in range(n_test))))
    return root
