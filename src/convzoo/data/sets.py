"""The data set a run trains on, whatever it came from: ``open_data`` and the ``DataSet`` it returns.

``data`` names a published set (``fashion-mnist``, the default, ``mnist``, ``kmnist``,
``cifar10``), or is a path: a folder of IDX files in the MNIST layout (``train-images-idx3-ubyte``
and its three siblings, gzipped or not; EMNIST's ``emnist-<split>-train-images-idx3-ubyte`` too)
or a folder of images sorted by class (``convzoo.data.folder``). A name wins over a folder of the
same name in the working directory: write ``./mnist`` for the folder.

Whatever the source, the result is the same: uint8 ``(N, C, H, W)`` images with ``C`` 1 or 3 and
one size, int64 labels, class names in label order. A pool of images (``DIR/<class>/...``) is split
here: ``test_fraction`` of each class, rounded, at least one image left for training, drawn with
``torch.randperm`` from a generator seeded with ``seed``, so the same folder, fraction and seed
always give the same split.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .arrays import Arrays, folder_key, load_arrays, save_arrays
from .catalog import NAMED, named_dir, read_cifar10
from .folder import read_folder, shown
from .idx import read_idx
from .source import load_split

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as Pillow converts RGB to L
_IDX_IMAGES = re.compile(r"^(.*?)train-images-idx3-ubyte(\.gz)?$")


@dataclass(frozen=True)
class DataSet:
    """Both splits of a data set in memory: images uint8 ``(N, C, H, W)``, labels int64 ``(N,)``."""

    name: str  # a published set's name, or the folder's resolved path
    classes: tuple[str, ...]  # class names in label order
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    split: dict = field(default_factory=dict)  # how the test split was chosen: rule, and fraction and seed
    notes: tuple[str, ...] = ()  # the warnings given while reading it

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def size(self) -> int:
        """The side of the (square) images, in pixels."""
        return self.train_images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """What a run records about its data (JSON-ready)."""
        return {"data": self.name, "classes": list(self.classes), "channels": self.channels, "size": self.size,
                "train": len(self.train_labels), "test": len(self.test_labels), "split": dict(self.split)}


def data_name(data: str | None) -> str | None:
    """How a run records ``data``: None and a published set's name as they are, a path made absolute.

    So the run reads the same folder whatever the working directory of a later ``eval`` or resume.
    """
    if data is None or data in NAMED:
        return data
    return os.path.abspath(os.path.expanduser(data))


FASHION_DESCRIPTION = {"data": "fashion-mnist", "classes": list(NAMED["fashion-mnist"].classes), "channels": 1,
                       "size": 28, "split": {"rule": "official"}}  # what a run written before --data trained on


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def open_data(
    data: str | None = None, *, data_dir: str | Path | None = None, grayscale: bool = False, size: int | None = None,
    test_fraction: float = 0.2, seed: int = 0, warn: Callable[[str], None] | None = _stderr,
) -> DataSet:
    """Read the data set ``data`` (see the module's docstring) into memory.

    ``data_dir`` is where a published set's files are (default: found as ``convzoo data fetch``
    leaves them; for Fashion-MNIST, ``find_data_dir``'s search). ``grayscale`` converts colour to
    one channel (luma), ``size`` resizes every image to ``size x size`` (bilinear, antialiased).
    ``warn`` receives each warning (default: ``warning: ...`` on stderr; None: silent).
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if size is not None and size < 1:
        raise DataError(f"size must be a positive number of pixels, got {size}")
    notes: list[str] = []

    def say(message: str) -> None:
        notes.append(message)
        if warn is not None:
            warn(message)

    name = "fashion-mnist" if data is None else str(data)
    if name in NAMED:
        result = _published(name, data_dir)
    else:
        result = _from_path(Path(name).expanduser(), grayscale, size, test_fraction, seed, say)
    result = _shaped(result, grayscale, size)
    return DataSet(**{**result.__dict__, "notes": tuple(notes)})


def _published(name: str, data_dir: str | Path | None) -> DataSet:
    official = {"rule": "official"}
    if name == "fashion-mnist":
        (xa, ya), (xb, yb) = (load_split(split, data_dir) for split in ("train", "test"))
        return DataSet(name, NAMED[name].classes, xa[:, None], ya, xb[:, None], yb, official)
    directory = Path(data_dir).expanduser() if data_dir is not None else named_dir(name)
    hint = f"download it with `convzoo data fetch {name}`"
    if name == "cifar10":
        archive = directory / "cifar-10-binary.tar.gz"
        if not archive.is_file():
            raise DataError(f"CIFAR-10 not found: no {archive}; {hint}")
        images, labels, splits, classes = _cifar_arrays(archive)
        return _from_arrays(name, classes, images, labels, splits, official)
    prefix = _idx_prefix(directory)
    if prefix is None:
        raise DataError(f"{name} not found: {directory} lacks train-images-idx3-ubyte[.gz]; {hint}")
    result = _read_idx_dir(directory, prefix)
    return DataSet(name, NAMED[name].classes, *(getattr(result, k) for k in (
        "train_images", "train_labels", "test_images", "test_labels")), official)


def _cifar_arrays(archive: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """CIFAR-10 from the array cache when the archive is unchanged, else read (and cached)."""
    st = archive.stat()
    key = folder_key(archive, (archive.name,), (0,), (0,), ((st.st_size, st.st_mtime_ns),), False, None)
    cached, _ = load_arrays(archive, key)
    if cached is not None and len(cached.paths) == 10:
        return cached.images, cached.labels, cached.splits, cached.paths
    images, labels, splits, classes = read_cifar10(archive)
    save_arrays(archive, key, Arrays(images, labels, splits, np.zeros(len(labels), np.uint64), classes))
    return images, labels, splits, classes


def _idx_prefix(directory: Path) -> str | None:
    """The prefix of the one IDX set in ``directory`` ("" for MNIST's names, "emnist-letters-" ...); None if none."""
    if not directory.is_dir():
        return None
    prefixes = sorted({m.group(1) for p in directory.iterdir() if (m := _IDX_IMAGES.match(p.name))})
    if len(prefixes) > 1:
        raise DataError(f"{shown(str(directory))}: holds several IDX sets ({', '.join(p or '(none)' for p in prefixes)}"
                        "); point at a folder holding one")
    return prefixes[0] if prefixes else None


def _idx_file(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{shown(str(directory))}: lacks {name}[.gz]")


def _read_idx_dir(directory: Path, prefix: str) -> DataSet:
    """An IDX folder's four files; classes "0".."K-1" from the largest label. EMNIST's images are transposed."""
    splits = []
    for stem in ("train", "t10k" if not prefix.startswith("emnist") else "test"):
        images = read_idx(_idx_file(directory, f"{prefix}{stem}-images-idx3-ubyte"), ndim=3)
        labels_path = _idx_file(directory, f"{prefix}{stem}-labels-idx1-ubyte")
        labels = read_idx(labels_path, ndim=1).long()
        if len(images) != len(labels):
            raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
        if prefix.startswith("emnist"):  # EMNIST stores each image transposed
            images = images.transpose(1, 2).contiguous()
        splits.append((images[:, None], labels))
    (xa, ya), (xb, yb) = splits
    both = torch.cat([ya, yb])
    count = int(both.max()) + 1 if len(both) else 0
    if count < 2:
        raise DataError(f"{shown(str(directory))}: the labels name fewer than two classes")
    return DataSet(str(directory.resolve()), tuple(map(str, range(count))), xa, ya, xb, yb, {"rule": "official"})


def _from_path(path: Path, grayscale: bool, size: int | None, fraction: float, seed: int,
               say: Callable[[str], None]) -> DataSet:
    if not path.exists():
        raise DataError(f"{shown(str(path))}: no such data set or folder (named sets: {', '.join(NAMED)})")
    prefix = _idx_prefix(path)
    if prefix is not None:
        return _read_idx_dir(path, prefix)
    found, arrays = read_folder(path, grayscale=grayscale, size=size, warn=say)
    rule = {"rule": "folders", "layout": found.layout}
    splits = arrays.splits
    if found.layout == "pool":
        splits = stratified_split(arrays.labels, fraction, seed)
        rule = {"rule": "stratified", "test_fraction": fraction, "seed": seed}
    _warn_duplicates(arrays, splits, say)
    return _from_arrays(str(path.resolve()), found.classes, arrays.images, arrays.labels, splits, rule)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """1 for the test images, 0 for training: ``round(fraction * n)`` of each class's ``n``, at most ``n - 1``."""
    splits = np.zeros(len(labels), dtype=np.uint8)
    generator = torch.Generator().manual_seed(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = min(int(np.floor(fraction * len(members) + 0.5)), len(members) - 1)
        order = torch.randperm(len(members), generator=generator).numpy()
        splits[members[order[:take]]] = 1
    return splits


def _warn_duplicates(arrays: Arrays, splits: np.ndarray, say: Callable[[str], None]) -> None:
    train, test = arrays.digests[splits == 0], arrays.digests[splits == 1]
    both = np.intersect1d(train, test)
    if len(both):
        first = int(np.flatnonzero(np.isin(arrays.digests, both) & (splits == 1))[0])
        say(f"{int(np.isin(test, both).sum())} test images are also in the training split (same pixels), "
            f"e.g. {shown(arrays.paths[first])}: the test accuracy will flatter the model")


def _from_arrays(name: str, classes: tuple[str, ...], images: np.ndarray, labels: np.ndarray,
                 splits: np.ndarray, rule: dict) -> DataSet:
    test = splits == 1
    x, y = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    mask = torch.from_numpy(test)
    return DataSet(name, tuple(classes), x[~mask], y[~mask], x[mask], y[mask], rule)


def _shaped(data: DataSet, grayscale: bool, size: int | None) -> DataSet:
    """``data`` with one channel if ``grayscale`` and images of ``size`` if given (already so for folders)."""
    def convert(x: torch.Tensor) -> torch.Tensor:
        parts = []
        for chunk in x.split(4096):
            if grayscale and chunk.shape[1] == 3:
                weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
                chunk = (chunk.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
            if size is not None and chunk.shape[-2:] != (size, size):
                chunk = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False,
                                      antialias=True).round().clamp(0, 255).to(torch.uint8)
            parts.append(chunk)
        return torch.cat(parts) if parts else x

    height, width = data.train_images.shape[-2:]
    if size is None and height != width:  # an IDX set of oblong images: squared to the shorter side
        size = min(height, width)
    if not (grayscale and data.channels == 3) and (size is None or data.size == size):
        return data
    return DataSet(data.name, data.classes, convert(data.train_images), data.train_labels,
                   convert(data.test_images), data.test_labels, data.split, data.notes)
