"""The named data sets: where each is published, the checksums its publisher gives, downloading it.

``NAMED`` lists them. Fashion-MNIST, MNIST and Kuzushiji-MNIST are four gzipped IDX files each;
CIFAR-10 is its *binary* distribution, one ``tar.gz`` read by ``read_cifar10`` (the pickled
Python version is never unpickled). The MD5 sums are the publishers' (MNIST's and KMNIST's as
torchvision's ``datasets/mnist.py`` checks them, CIFAR-10's from https://www.cs.toronto.edu/~kriz/cifar.html).
``fetch_named`` downloads a set into ``cache_root() / NAME`` and checks every file.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path
from .idx import cache_root, read_raw
from .source import CLASSES as FASHION_CLASSES
from .source import DEFAULT_MIRROR as FASHION_MIRROR
from .source import MD5_GZ as FASHION_MD5
from .source import _download, fetch


@dataclass(frozen=True)
class Named:
    """A published data set: its class names, files (name -> the publisher's MD5) and download base URL."""

    name: str
    classes: tuple[str, ...]
    files: Mapping[str, str]
    mirror: str
    source: str  # the publisher's page


_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

NAMED: dict[str, Named] = {
    "fashion-mnist": Named(
        "fashion-mnist", FASHION_CLASSES, {f"{n}.gz": FASHION_MD5[n] for n in _IDX_NAMES}, FASHION_MIRROR,
        "https://github.com/zalandoresearch/fashion-mnist"),
    "mnist": Named(
        "mnist", tuple("0123456789"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        "https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "kmnist": Named(
        "kmnist", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        {"train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
         "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
         "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
         "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134"},
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/", "https://github.com/rois-codh/kmnist"),
    "cifar10": Named(
        "cifar10", ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        "https://www.cs.toronto.edu/~kriz/", "https://www.cs.toronto.edu/~kriz/cifar.html"),
}


def named_dir(name: str) -> Path:
    """Where ``fetch_named`` stores set ``name``: ``cache_root() / name``."""
    return cache_root() / name


def _md5(path: Path) -> str | None:
    try:
        return hashlib.md5(read_raw(path), usedforsecurity=False).hexdigest()
    except DataError:
        return None


def fetch_named(name: str, dest: str | Path | None = None, mirror: str | None = None, progress: bool = True) -> Path:
    """Download set ``name`` from ``mirror`` (default: the publisher's) into ``dest`` (default ``named_dir``).

    Every file must match its publisher's MD5; one that does not, or a download that fails, leaves
    nothing under the file's name (each download goes to a temporary file, renamed once checked).
    Files already present and valid are not downloaded again. Fashion-MNIST goes through
    ``source.fetch``, which also accepts a mirror's recompressed files by their content's SHA-256.
    """
    if name not in NAMED:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(NAMED)}")
    if name == "fashion-mnist":
        return fetch(dest, mirror=mirror or FASHION_MIRROR, progress=progress)
    spec = NAMED[name]
    dest = named_dir(name) if dest is None else Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create download directory {dest}: {e.strerror or e}") from None
    for filename, md5 in spec.files.items():
        if (dest / filename).is_file() and _md5(dest / filename) == md5:
            continue
        url = f"{(mirror or spec.mirror).rstrip('/')}/{filename}"
        with atomic_path(dest / filename) as tmp:
            _download(url, tmp, progress)
            if _md5(tmp) != md5:
                raise DataError(f"download of {url} does not match its publisher's MD5 {md5} (corrupt or wrong file)")
    return dest


# ---------------------------------------------------------------------------------------------
# CIFAR-10's binary distribution: each record is a label byte, then 3 x 32 x 32 pixel bytes (R, G, B planes).

CIFAR_MEMBERS = {f"cifar-10-batches-bin/data_batch_{i}.bin": 0 for i in range(1, 6)}
CIFAR_MEMBERS["cifar-10-batches-bin/test_batch.bin"] = 1
CIFAR_META = "cifar-10-batches-bin/batches.meta.txt"
_RECORD = 1 + 3 * 32 * 32
_BATCH = 10_000


def read_cifar10(archive: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(images (N, 3, 32, 32) uint8, labels int64, splits uint8, classes)`` from ``cifar-10-binary.tar.gz``.

    The archive is read as a stream: nothing is extracted to disk, only the six batch files and
    the class names are read, each after its size in the tar header is checked (every batch is
    exactly 10,000 records of 3,073 bytes, the names file at most 4 KiB).
    """
    archive = Path(archive)
    batches: dict[str, bytes] = {}
    meta = None
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                wanted = member.name in CIFAR_MEMBERS or member.name == CIFAR_META
                if not wanted:
                    continue
                limit = _RECORD * _BATCH if member.name in CIFAR_MEMBERS else 4096
                exact = member.name in CIFAR_MEMBERS
                if not member.isfile() or (member.size != limit if exact else member.size > limit):
                    raise DataError(f"{archive}: member {member.name} is not a file of the expected size "
                                    f"({member.size:,} bytes)")
                f = tar.extractfile(member)
                assert f is not None  # a regular file
                content = f.read(limit)
                if member.name == CIFAR_META:
                    meta = content
                else:
                    batches[member.name] = content
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive}: not a readable CIFAR-10 binary archive ({type(e).__name__}: {e})") from None
    if missing := [m for m in CIFAR_MEMBERS if m not in batches]:
        raise DataError(f"{archive}: lacks {', '.join(missing)} (is it cifar-10-binary.tar.gz?)")
    records = np.frombuffer(b"".join(batches[m] for m in CIFAR_MEMBERS), dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{archive}: label {labels.max()} is outside 0..9")
    splits = np.repeat(np.array(list(CIFAR_MEMBERS.values()), dtype=np.uint8), _BATCH)
    classes = NAMED["cifar10"].classes
    if meta is not None:
        names = tuple(line.strip() for line in meta.decode("ascii", "replace").splitlines() if line.strip())
        if len(names) == 10 and all(n.isascii() and n.isprintable() for n in names):
            classes = names
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels, splits, classes


def check_named(name: str, data_dir: str | Path | None = None) -> list[dict]:
    """Verify the files of published set ``name`` (not Fashion-MNIST: ``source.check``) against their MD5s.

    One row per file: ``{file, path, md5, ok}``; a missing file raises ``DataError``.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else named_dir(name)
    rows = []
    for filename, md5 in NAMED[name].files.items():
        path = directory / filename
        if not path.is_file():
            raise DataError(f"{name}: {path} not found; download it with `convzoo data fetch {name}`")
        digest = _md5(path)
        rows.append({"file": filename, "path": str(path), "md5": digest, "ok": digest == md5})
    return rows
