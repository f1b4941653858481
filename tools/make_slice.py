"""Regenerate ``tests/data/fashion-mnist-slice/``: the first 2000 train and 1000 test examples of Fashion-MNIST.

The slice is real data small enough to commit (about 1.3 MB), so tests exercise the true file
format and pixel statistics without the full set. It is written as gzipped IDX files under the
standard names, compressed deterministically (``mtime=0``), so rerunning gives identical bytes::

    python tools/make_slice.py                  # full set found by convzoo.data.find_data_dir()
    python tools/make_slice.py /path/to/fashion-mnist
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import torch

from convzoo.data import FILES, find_data_dir, load_split

SIZES = {"train": 2000, "test": 1000}
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "fashion-mnist-slice"


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """Unsigned-byte IDX: magic 0x000008<ndim>, one big-endian uint32 per dimension, then the bytes."""
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    return header + tensor.to(torch.uint8).contiguous().numpy().tobytes()


def main(argv: list[str]) -> None:
    source = find_data_dir(argv[0] if argv else None)
    OUT.mkdir(exist_ok=True)
    for split, n in SIZES.items():
        images, labels = load_split(split, source)
        for name, tensor in zip(FILES[split], (images[:n], labels[:n]), strict=True):
            path = OUT / f"{name}.gz"
            path.write_bytes(gzip.compress(idx_bytes(tensor), compresslevel=9, mtime=0))
            print(f"{path}: {tuple(tensor.shape)}, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
