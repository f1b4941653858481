"""Fashion-MNIST itself: its classes and files, where to find them, how to check and download them.

The data set is four IDX files (``FILES``), gzipped or raw. ``find_data_dir`` looks for them in
an explicit directory, ``$CONVZOO_DATA``, the user cache (filled by ``fetch``) and the Debian
package's directory, in that order. ``load_split`` returns one split as tensors, ``check``
verifies the files against the official SHA-256 sums, ``fetch`` downloads them from a mirror.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import DataError
from ..fileio import atomic_path
from .idx import cache_dir, gunzip, idx_header, read_bytes, read_idx, read_raw

CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# split -> (images, labels); names of the decompressed files, stored as ``name`` or ``name.gz``.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of the decompressed files: stable however a mirror (or Debian) compressed them.
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# MD5 of the official .gz files, keyed like SHA256.
MD5_GZ: dict[str, str] = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}

DEFAULT_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"  # S3 websites serve http only
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

IMAGE_SIZE = 28  # the side of every image, in pixels
_CHUNK = 1 << 20  # download read size


# ---------------------------------------------------------------------------------------------
# Finding the data set


def _file_in(directory: Path, name: str) -> Path | None:
    """``directory/name.gz`` or else ``directory/name``, whichever exists first; None if neither."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _all_names() -> list[str]:
    return [name for pair in FILES.values() for name in pair]


def _missing(directory: Path) -> list[str]:
    return [name for name in _all_names() if _file_in(directory, name) is None]


def _require(directory: Path, what: str) -> Path:
    directory = directory.expanduser()
    if not directory.is_dir():
        raise DataError(f"{what} {directory} does not exist or is not a directory")
    missing = _missing(directory)
    if missing:
        raise DataError(f"{what} {directory} lacks {', '.join(n + '[.gz]' for n in missing)}")
    return directory


def find_data_dir(data_dir: str | Path | None = None) -> Path:
    """The directory holding the four Fashion-MNIST files (each as ``name.gz`` or raw ``name``).

    Searched in order: ``data_dir``, ``$CONVZOO_DATA``, ``cache_dir()``, ``DEBIAN_DIR``. A directory
    named explicitly (argument or environment) must hold the files: it never falls back.
    """
    if data_dir is not None:
        return _require(Path(data_dir), "data directory")
    env = os.environ.get("CONVZOO_DATA")
    if env:
        return _require(Path(env), "CONVZOO_DATA directory")
    searched = [cache_dir(), DEBIAN_DIR]
    for directory in searched:
        if directory.is_dir() and not _missing(directory):
            return directory
    raise DataError(
        f"Fashion-MNIST not found (looked in {', '.join(map(str, searched))}); "
        "download it with `convzoo data fetch`, or install it with `apt-get install dataset-fashion-mnist`, "
        "or point CONVZOO_DATA at a directory holding the four IDX files"
    )


def _paths(split: str, data_dir: str | Path | None) -> tuple[Path, Path]:
    if split not in FILES:
        raise DataError(f"unknown split {split!r}, expected one of {', '.join(FILES)}")
    directory = find_data_dir(data_dir)
    images, labels = (_file_in(directory, name) for name in FILES[split])
    assert images is not None and labels is not None  # find_data_dir checked
    return images, labels


def load_split(split: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``"train"`` or ``"test"``: images uint8 ``(N, 28, 28)`` and labels int64 ``(N,)`` in 0..9."""
    images_path, labels_path = _paths(split, data_dir)
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        h, w = images.shape[1:]
        raise DataError(f"{images_path}: images are {h}x{w}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    if len(images) != len(labels):
        raise DataError(
            f"{split} split: {images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= len(CLASSES):
        bad = int(torch.nonzero(labels >= len(CLASSES))[0])
        raise DataError(f"{labels_path}: label {int(labels[bad])} at index {bad} is outside 0..{len(CLASSES) - 1}")
    return images, labels.long()


def check(data_dir: str | Path | None = None) -> list[dict]:
    """Verify each file's decompressed bytes against ``SHA256``.

    Returns one row per file: ``{file, path, sha256, ok, count}``, ``count`` being the number of
    items the header declares. A checksum mismatch is reported in the row, not raised; a file that
    is missing, unreadable or not valid IDX raises ``DataError`` saying what is wrong with it.
    """
    directory = find_data_dir(data_dir)
    rows = []
    for name in _all_names():
        path = _file_in(directory, name)
        assert path is not None  # find_data_dir checked
        data = read_bytes(path)
        count = idx_header(data, path)[0][0]
        digest = hashlib.sha256(data).hexdigest()
        rows.append({"file": name, "path": str(path), "sha256": digest, "ok": digest == SHA256[name], "count": count})
    return rows


# ---------------------------------------------------------------------------------------------
# Downloading


def _valid(path: Path, name: str, checksums: Mapping[str, str] | None) -> bool:
    """Whether ``path`` holds ``name``: the official .gz MD5 (official checksums only) or the SHA-256 of its content."""
    try:
        raw = read_raw(path)
        if checksums is None and hashlib.md5(raw, usedforsecurity=False).hexdigest() == MD5_GZ[name]:
            return True
        data = gunzip(raw, path)
    except DataError:
        return False
    return hashlib.sha256(data).hexdigest() == (SHA256 if checksums is None else checksums)[name]


def _download(url: str, dest: Path, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            disable = not progress or not sys.stderr.isatty()
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1],
                      disable=disable, leave=False) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DataError(f"download of {url} failed: {e.reason}") from None
    except ValueError as e:  # urlopen's "unknown url type"
        raise DataError(f"cannot download {url}: {e}") from None
    except (OSError, http.client.HTTPException) as e:
        raise DataError(f"download of {url} failed: {type(e).__name__}: {e}") from None
    if total is not None and received != total:
        raise DataError(f"download of {url} interrupted: received {received} of {total} bytes")


def fetch(
    dest: str | Path | None = None,
    mirror: str = DEFAULT_MIRROR,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Path:
    """Download the four ``.gz`` files from ``mirror`` into ``dest`` (default ``cache_dir()``); return ``dest``.

    A file is accepted when its MD5 is the official one or the SHA-256 of its decompressed content
    is (mirrors may recompress). ``checksums`` (file name -> SHA-256 of the decompressed content)
    replaces the official sums, for mirrors of other content such as the test slice. Files already
    present and valid are skipped. Each download goes to a temporary file that only replaces the
    final name once verified, so a failed or interrupted download leaves nothing under that name.
    """
    dest = cache_dir() if dest is None else Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create download directory {dest}: {e.strerror or e}") from None
    for name in _all_names():
        existing = _file_in(dest, name)
        if existing is not None and _valid(existing, name, checksums):
            continue
        filename = f"{name}.gz"
        url = f"{mirror.rstrip('/')}/{filename}"
        with atomic_path(dest / filename) as tmp:
            _download(url, tmp, progress)
            if not _valid(tmp, name, checksums):
                raise DataError(f"download of {url} does not match the expected checksum (corrupt or wrong file)")
    return dest
