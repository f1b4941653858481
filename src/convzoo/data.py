"""Fashion-MNIST: read IDX files, find or download the data set, and batch it in device memory.

The data set is four IDX files (``FILES``), gzipped or raw. ``find_data_dir`` looks for them in
an explicit directory, ``$CONVZOO_DATA``, the user cache (filled by ``fetch``) and the Debian
package's directory, in that order. ``load_split`` returns one split as tensors, ``check``
verifies the files against the official SHA-256 sums. Decompressing costs more than the rest of
loading together, so ``read_idx`` keeps a raw copy of each gzipped file it reads in
``raw_cache_dir()`` and reads that from then on.

Training never uses a DataLoader: ``Batches`` moves the whole split to the device once, as uint8,
and builds each batch with tensor indexing, so converting, resizing and augmenting are a few
batched ops on the device. ``to_input`` is the one conversion from uint8 pixels to network input,
shared by training, evaluation and prediction.

Every problem a user can cause with the data raises ``DataError`` with a message naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import stat
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .errors import DataError
from .fileio import atomic_path

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

IMAGE_SIZE = 28
# An IDX magic number is two zero bytes, the element type, then the number of dimensions.
_UBYTE = 0x08  # element type: unsigned byte
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # download read size


# ---------------------------------------------------------------------------------------------
# Reading IDX files


def _read_raw(path: Path) -> memoryview:
    """The bytes of ``path``, in a writable buffer that tensors can share without a copy.

    The buffer is an ``np.empty`` array: unlike a ``bytearray`` it is not zeroed first and NumPy
    backs it with huge pages, which makes reading the 47 MB of training images several times faster.
    """
    try:
        with open(path, "rb") as f:
            data = np.empty(os.fstat(f.fileno()).st_size, dtype=np.uint8)
            data = data[: f.readinto(data)]
            if rest := f.read():  # more than the size announced: a pipe, a file still growing
                data = np.concatenate([data, np.frombuffer(rest, dtype=np.uint8)])
            return memoryview(data)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _gunzip(data: memoryview, path: Path) -> bytes | memoryview:
    """``data`` decompressed when it starts with the gzip magic, else ``data`` itself.

    Sniffing the content rather than trusting the suffix also reads a ``.gz`` name holding raw bytes
    (some browsers decompress downloads but keep the name).
    """
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip file ({len(data)} bytes): {e}") from None


def _read_bytes(path: str | Path) -> bytes | memoryview:
    """The decompressed content of ``path``."""
    path = Path(path)
    return _gunzip(_read_raw(path), path)


def _idx_header(data: bytes | memoryview, path: str | Path, ndim: int | None = None) -> tuple[tuple[int, ...], int]:
    """Validate an unsigned-byte IDX file's header against its length; return (dims, header length)."""
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, nd = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        raise DataError(f"{path}: not an IDX file (magic 0x{data[:4].hex()}, expected 0x00000803 or 0x00000801)")
    if dtype != _UBYTE:
        raise DataError(f"{path}: IDX element type 0x{dtype:02x} is not supported (expected 0x08, unsigned byte)")
    allowed = (1, 3) if ndim is None else (ndim,)
    if nd not in allowed:
        expected = " or ".join(map(str, allowed))
        raise DataError(f"{path}: IDX file has {nd} dimensions, expected {expected} (magic 0x{data[:4].hex()})")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd))
    expected_len = math.prod(dims)
    payload = len(data) - header
    if payload != expected_len:
        shape = " x ".join(map(str, dims))
        what = "truncated" if payload < expected_len else f"{payload - expected_len} extra bytes after the data"
        raise DataError(f"{path}: {what}: header says {shape} = {expected_len} bytes of data, file has {payload}")
    return dims, header


def read_idx(path: str | Path, ndim: int | None = None) -> torch.Tensor:
    """Read an unsigned-byte IDX file, gzipped or raw, into a uint8 tensor shaped as its header says.

    Accepts magic 0x00000803 (3 dims, images) or 0x00000801 (1 dim, labels); ``ndim`` demands one
    of them. The payload must be exactly as long as the product of the dimensions.

    A gzipped file is read from its raw copy in ``raw_cache_dir()`` when there is one (see
    ``_cache_entry``), else decompressed and copied there for the next read. The cache is best
    effort: an entry that is missing, unreadable or not valid IDX is rewritten, a cache that cannot
    be written is skipped, and errors always concern ``path`` itself.
    """
    path = Path(path)
    entry = _cache_entry(path)
    data = None if entry is None else _read_entry(entry)
    if data is None:
        raw = _read_raw(path)
        data = _gunzip(raw, path)
        dims, header = _idx_header(data, path, ndim)
        if entry is not None and raw[:2] == _GZIP_MAGIC:
            _write_entry(entry, data)
    else:
        dims, header = _idx_header(data, path, ndim)
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    if not array.flags.writeable:  # gzip.decompress returns immutable bytes; a file read is shared as is
        array = array.copy()
    return torch.from_numpy(array)


# A source whose ctime is younger than this is not cached: see _cache_entry.
_SETTLED_NS = 2_000_000_000


def _cache_entry(path: Path) -> Path | None:
    """Where the raw copy of ``path`` lives in ``raw_cache_dir()``; None unless it is a file that settled a while ago.

    The name holds ``path``'s name, a hash of its resolved location and a hash of its size, mtime,
    ctime and inode, so a changed, replaced or moved file gets a new entry: ctime changes with every
    write and, unlike mtime (``cp -p``, ``touch -d``), cannot be set back. Two writes within one
    tick of the file system's clock can leave all four alike, so, like git with racily clean files,
    a file is cached only once its ctime is ``_SETTLED_NS`` old: any later write shows as a new ctime.
    """
    try:
        resolved = path.resolve()
        st = resolved.stat()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop before Python 3.13
        return None  # reading ``path`` itself reports the problem
    if not stat.S_ISREG(st.st_mode) or time.time_ns() - st.st_ctime_ns < _SETTLED_NS:
        return None
    where = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    what = hashlib.sha256(f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}".encode()).hexdigest()[:12]
    return raw_cache_dir() / f"{resolved.name.removesuffix('.gz')}.{where}.{what}"


def _read_entry(entry: Path) -> memoryview | None:
    """The content of cache ``entry``; None when it is missing, unreadable or not a valid IDX file."""
    try:
        data = _read_raw(entry)
        _idx_header(data, entry)
    except DataError:
        return None
    return data


def _write_entry(entry: Path, data: bytes | memoryview) -> None:
    """Store ``data`` as ``entry`` and delete the entries of earlier versions of the same file, if possible."""
    try:
        with atomic_path(entry) as tmp:
            tmp.write_bytes(data)
        same_source = entry.name.rsplit(".", 1)[0] + "."
        for old in entry.parent.iterdir():
            if old.name.startswith(same_source) and old != entry:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # read-only or full: the next read decompresses again


# ---------------------------------------------------------------------------------------------
# Finding the data set


def cache_dir() -> Path:
    """Where ``fetch`` downloads to: ``$XDG_CACHE_HOME/convzoo/fashion-mnist``, default ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convzoo" / "fashion-mnist"


def raw_cache_dir() -> Path:
    """Where ``read_idx`` keeps raw copies of the gzipped files it reads: ``cache_dir() / "raw"``.

    Deleting it is always safe; it only makes the next read of each file decompress it again.
    """
    return cache_dir() / "raw"


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
        data = _read_bytes(path)
        count = _idx_header(data, path)[0][0]
        digest = hashlib.sha256(data).hexdigest()
        rows.append({"file": name, "path": str(path), "sha256": digest, "ok": digest == SHA256[name], "count": count})
    return rows


# ---------------------------------------------------------------------------------------------
# Downloading


def _valid(path: Path, name: str, checksums: Mapping[str, str] | None) -> bool:
    """Whether ``path`` holds ``name``: the official .gz MD5 (official checksums only) or the SHA-256 of its content."""
    try:
        raw = _read_raw(path)
        if checksums is None and hashlib.md5(raw, usedforsecurity=False).hexdigest() == MD5_GZ[name]:
            return True
        data = _gunzip(raw, path)
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


# ---------------------------------------------------------------------------------------------
# Batching in device memory


def to_input(images: torch.Tensor, resize: int | None = None) -> torch.Tensor:
    """Network input from uint8 pixels: ``(B, H, W)`` or ``(B, 1, H, W)`` -> float32 ``(B, 1, S, S)`` in [0, 1].

    Pixels are divided by 255 and, when ``resize`` is set and differs from the image side, resized
    bilinearly (``align_corners=False``, no antialiasing) on the images' device. ``S = resize or H``.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"to_input expects uint8 pixels, got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"to_input expects (B, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
    x = images.float().div_(255)
    if resize is not None and (resize, resize) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=False)
    return x


_PAD = 2  # random-crop padding, in pixels


def _augment(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Flip ``x`` (B, 1, H, W) where ``flip`` (B,) is set, then crop each image at its ``shift`` (B, 2) in [0, 2 * pad].

    The crop window slides over the zero-padded image; ``shift == pad`` leaves it in place. The
    crop is one ``gather`` of flat pixel indices, several times faster than fancy indexing.
    """
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    b, _, h, w = x.shape
    wp = w + 2 * _PAD
    padded = F.pad(x, (_PAD, _PAD, _PAD, _PAD)).view(b, -1)  # B x (H + 2 pad)(W + 2 pad)
    window = torch.arange(h, device=x.device).view(-1, 1) * wp + torch.arange(w, device=x.device)  # H x W
    start = shift[:, 0] * wp + shift[:, 1]  # B: flat index of each crop's top-left pixel
    return padded.gather(1, window.view(1, -1) + start.view(-1, 1)).view(b, 1, h, w)


class Batches:
    """Mini-batches of one split, held on ``device`` as uint8; iterate for ``(x, y)`` per batch.

    ``x`` is float32 ``(B, 1, S, S)`` from ``to_input`` (``S = resize`` or 28), ``y`` int64 ``(B,)``.
    Each epoch uses one permutation drawn from a ``torch.Generator`` seeded with ``seed + epoch``
    (identity order without ``shuffle``); call ``set_epoch`` before each epoch, or every pass
    repeats the same order. ``augment`` flips each image horizontally with probability 1/2 and
    crops it at a random offset from its 2-pixel zero-padded copy; those draws come from the same
    generator, per example, so a run is reproducible and resumable at an epoch boundary.

    Distributed training: ``batch_size`` is the global batch, which must divide by ``world_size``.
    All ranks draw the same permutation and augmentation and walk the same global batches; rank
    ``r`` takes the contiguous rows ``[r * b // world_size, (r + 1) * b // world_size)`` of each
    global batch of ``b`` rows, i.e. ``batch_size // world_size`` of a full one. Ranks partition
    every batch, and what a given example looks like does not depend on ``world_size``.

    The last partial batch is kept unless ``drop_last``; with several ranks it is dropped as well
    when it has fewer rows than ranks, so that no rank ever gets an empty batch. ``channels_last``
    gives the batches NHWC strides, for a model in that memory format.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        resize: int | None = None,
        augment: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() not in (3, 4) or (images.dim() == 4 and images.shape[1] != 1):
            shape = tuple(images.shape)
            raise ValueError(f"images must be uint8 (N, H, W) or (N, 1, H, W), got {images.dtype} {shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} must be divisible by world_size {world_size}")
        if resize is not None and resize < 1:
            raise ValueError(f"resize must be a positive side length, got {resize}")
        self.images = images.reshape(len(images), 1, *images.shape[-2:]).to(device)  # N x 1 x H x W, uint8
        if channels_last:
            # With one channel both layouts are the same bytes; only the strides say NHWC, and every
            # batch cut from them (indexing, conversion, resizing) inherits them. Convolutions then
            # take it as channels-last input, without converting it on every step and in backward.
            self.images = self.images.to(memory_format=torch.channels_last)
        self.labels = labels.to(device=device, dtype=torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = self.images.device
        self.resize = resize
        self.augment = augment
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.epoch = 0

    @property
    def num_examples(self) -> int:
        """Examples in the split (all ranks together, including any a dropped last batch leaves out)."""
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation and augmentation of ``epoch`` for the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + int(rest > 0 and not self.drop_last and rest >= self.world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_examples
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.augment:
            flip = torch.rand(n, generator=generator) < 0.5
            shift = torch.randint(0, 2 * _PAD + 1, (n, 2), generator=generator)
            flip, shift = flip.to(self.device), shift.to(self.device)
        order = order.to(self.device)
        for i in range(len(self)):
            start = i * self.batch_size
            b = min(self.batch_size, n - start)
            lo = start + self.rank * b // self.world_size
            hi = start + (self.rank + 1) * b // self.world_size
            index = order[lo:hi]
            x = self.images[index]
            if self.augment:
                x = _augment(x, flip[lo:hi], shift[lo:hi])
            if self.channels_last:  # the crop's gather returns NCHW strides; otherwise already NHWC, a no-op
                x = x.to(memory_format=torch.channels_last)
            yield to_input(x, self.resize), self.labels[index]


# ---------------------------------------------------------------------------------------------
# Looking at the data


def show_grid(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    path: str | Path,
    predictions: Sequence[int] | torch.Tensor | None = None,
    ncols: int = 10,
) -> Path:
    """Save a PNG grid of ``images`` ((N, H, W) or (N, 1, H, W), uint8 or float in [0, 1]) titled by class.

    With ``predictions`` each title is the predicted class, red with the true class below when wrong.
    The images are one mosaic on one Axes (``convzoo.plots.tile_grid``), rendered with Agg through
    ``matplotlib.figure.Figure``, leaving pyplot's global state alone.
    """
    from .plots import tile_grid  # matplotlib only once a grid is drawn

    images = images.detach().cpu()
    if images.dim() == 4:
        images = images[:, 0]
    n = len(images)
    if n == 0:
        raise ValueError("show_grid needs at least one image")
    labels = [int(v) for v in labels]
    preds = None if predictions is None else [int(v) for v in predictions]
    vmax = 255 if images.dtype == torch.uint8 else 1.0
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    h, w = images.shape[1:]
    tiles = np.full((nrows * ncols, h, w), np.nan, dtype=np.float32)
    tiles[:n] = images.float().numpy()
    lines = 2 if preds is not None and preds != labels else 1
    title = lines * 0.14 + 0.04  # inches: 8 pt lines above each image
    grid = tile_grid(tiles.reshape(nrows, ncols, h, w), tile_inches=1.15, gap=(title + 0.08, 0.15),
                     margins=(0.05, 0.05, 0.05, title + 0.05), cmap="gray", vmin=0, vmax=vmax)
    for i in range(n):
        r, c = divmod(i, ncols)
        if preds is None or preds[i] == labels[i]:
            grid.above(r, c, CLASSES[labels[i]], fontsize=8)
        else:
            grid.above(r, c, f"{CLASSES[preds[i]]}\n({CLASSES[labels[i]]})", fontsize=8, color="tab:red")
    path = Path(path)
    with atomic_path(path) as tmp:
        grid.fig.savefig(tmp, format="png", dpi=100)
    return path
