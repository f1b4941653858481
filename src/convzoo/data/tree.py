"""A data set written as a class-folder tree of PNGs: ``DIR/train/<class>/<index>.png``, ``DIR/test/...``.

This is what a user's own data looks like, so the tests and the benchmark make their folders
with it. Class folder names are the class names with ``/`` replaced by ``-`` (Fashion-MNIST's
``T-shirt/top``); ``<index>`` is the image's index in its split, zero-padded. The tree is written
into a hidden folder beside ``DIR`` and moved into place only once complete, so an interrupted
export leaves nothing under ``DIR``; ``DIR`` must be missing or empty.
"""

from __future__ import annotations

import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError, file_system_error
from .sets import DataSet


def folder_name(class_name: str) -> str:
    """The folder a class is written to: its name, ``/`` as ``-`` (and never empty, ``.`` or ``..``)."""
    name = class_name.replace("/", "-").replace("\0", "")
    return name if name.strip(".") else f"class-{name}"


def _write_split(staging: Path, split: str, images, labels, classes: tuple[str, ...]) -> None:
    width = len(str(max(len(labels) - 1, 0)))
    for name in classes:
        (staging / split / folder_name(name)).mkdir(parents=True, exist_ok=True)
    pixels = images.numpy()

    def write(i: int) -> None:
        x = pixels[i]
        image = Image.fromarray(np.ascontiguousarray(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)))
        image.save(staging / split / folder_name(classes[int(labels[i])]) / f"{i:0{width}d}.png", compress_level=1)

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(len(labels)), chunksize=256))


def export_tree(data: DataSet, dest: str | Path) -> Path:
    """Write ``data`` under ``dest`` as PNGs (see the module's docstring); return ``dest``."""
    dest = Path(dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: exists and is not an empty folder; export writes into a new or empty one")
    if len({folder_name(c) for c in data.classes}) != len(data.classes):
        raise DataError("two class names map to the same folder name; cannot export")
    staging = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp"
    try:
        staging.mkdir(parents=True)
        _write_split(staging, "train", data.train_images, data.train_labels, data.classes)
        _write_split(staging, "test", data.test_images, data.test_labels, data.classes)
        if dest.exists():
            for split in ("train", "test"):
                os.rename(staging / split, dest / split)
            staging.rmdir()
        else:
            os.rename(staging, dest)
    except OSError as e:
        raise (file_system_error(e, dest) or e) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest
