"""The IDX file format, gzipped or raw, and the cache of decompressed copies that makes reading it fast.

An IDX file is a 4-byte magic number (two zero bytes, the element type, the number of dimensions),
one big-endian uint32 per dimension, then the elements. ``read_idx`` reads the unsigned-byte
kind that Fashion-MNIST uses. Decompressing costs more than the rest of loading together, so
``read_idx`` keeps a raw copy of each gzipped file it reads in ``raw_cache_dir()`` and reads that
from then on. Every problem with a file raises ``DataError`` with a message naming it.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, UserError
from ..fileio import atomic_path
from .memory import require_memory

# An IDX magic number is two zero bytes, the element type, then the number of dimensions.
_UBYTE = 0x08  # element type: unsigned byte
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # compressed bytes fed to the decompressor at a time


# ---------------------------------------------------------------------------------------------
# Reading IDX files


def read_raw(path: Path) -> memoryview:
    """The bytes of ``path``, in a writable buffer that tensors can share without a copy.

    The buffer is an ``np.empty`` array: unlike a ``bytearray`` it is not zeroed first and NumPy
    backs it with huge pages, which makes reading the 47 MB of training images several times faster.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            require_memory(size, f"{path} ({size:,} bytes)")
            data = np.empty(size, dtype=np.uint8)
            data = data[: f.readinto(data)]
            if rest := f.read():  # more than the size announced: a pipe, a file still growing
                data = np.concatenate([data, np.frombuffer(rest, dtype=np.uint8)])
            return memoryview(data)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def gunzip(data: memoryview, path: Path, ndim: int | None = None) -> bytes | memoryview:
    """``data`` decompressed when it starts with the gzip magic, else ``data`` itself.

    Sniffing the content rather than trusting the suffix also reads a ``.gz`` name holding raw bytes
    (some browsers decompress downloads but keep the name). The content must be an IDX file: it is
    decompressed as a stream, its header first, and never beyond the length that header declares
    (``idx_header``'s rules), so a gzip bomb costs no more memory than the data it claims to be.
    """
    if data[:2] != _GZIP_MAGIC:
        return data
    stream = _Gunzip(data, path)
    head = stream.read(4)
    if len(head) == 4 and head[3] <= 3:
        head += stream.read(4 * head[3])
    dims, header = idx_header(head, path, ndim, complete=False)
    size = header + math.prod(dims)
    require_memory(size, f"{path} (its header declares {size:,} bytes)")
    out = np.empty(size, dtype=np.uint8)
    out[:header] = np.frombuffer(head, dtype=np.uint8)
    got = header + stream.read_into(memoryview(out)[header:])
    extra = stream.count_rest(_EXTRA_COUNTED) if got == size else 0
    _check_length(dims, got - header, extra, path)
    return memoryview(out)


_EXTRA_COUNTED = 64 << 20  # extra bytes after a gzipped file's data are counted up to this many, then "more than"


class _Gunzip:
    """A gzip stream (of one or more members) decompressed on demand, never more than asked for."""

    def __init__(self, data: memoryview, path: Path) -> None:
        self.rest, self.path = data, path
        self.pending = b""  # input to feed before ``rest``: what followed the end of the last member
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _next(self, limit: int) -> bytes:
        """Up to ``limit`` more bytes of output; b"" at the end of the stream."""
        try:
            while True:
                if self.d.eof:
                    tail = self.d.unused_data
                    if (tail + bytes(self.rest[:2]))[:2] != _GZIP_MAGIC:
                        if tail.strip(b"\0") or bytes(self.rest).strip(b"\0"):  # gzip ignores trailing zeros
                            raise DataError(f"{self.path}: corrupt gzip file: {len(tail) + len(self.rest)} bytes of "
                                            "garbage after the compressed data")
                        self.rest = memoryview(b"")
                        return b""
                    self.d, self.pending = zlib.decompressobj(16 + zlib.MAX_WBITS), tail  # the next member
                    continue
                source = self.d.unconsumed_tail
                if not source and self.pending:
                    source, self.pending = self.pending, b""
                elif not source:
                    source, self.rest = self.rest[:_CHUNK], self.rest[_CHUNK:]
                    if not source:
                        raise DataError(f"{self.path}: corrupt or truncated gzip file: the compressed stream "
                                        "ends early")
                if out := self.d.decompress(source, limit):
                    return out
        except zlib.error as e:
            raise DataError(f"{self.path}: corrupt or truncated gzip file: {e}") from None

    def read(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n and (chunk := self._next(n - got)):
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def read_into(self, out: memoryview) -> int:
        got = 0
        while got < len(out) and (chunk := self._next(min(len(out) - got, _CHUNK))):
            out[got : got + len(chunk)] = chunk
            got += len(chunk)
        return got

    def count_rest(self, cap: int) -> int:
        """How many more bytes the stream holds, counting no further than ``cap`` (+1)."""
        counted = 0
        while counted <= cap and (chunk := self._next(_CHUNK)):
            counted += len(chunk)
        return counted


def read_bytes(path: str | Path, ndim: int | None = None) -> bytes | memoryview:
    """The decompressed content of IDX file ``path`` (gzipped or raw), bounded by its header."""
    path = Path(path)
    return gunzip(read_raw(path), path, ndim)


# The most bytes an IDX file may declare: more than any machine's memory, far less than overflows int64.
MAX_IDX_BYTES = 1 << 40


def idx_header(
    data: bytes | memoryview, path: str | Path, ndim: int | None = None, *, complete: bool = True,
) -> tuple[tuple[int, ...], int]:
    """Validate an unsigned-byte IDX file's header; return (dims, header length).

    With ``complete`` (the default) ``data`` is the whole file and its length must be exactly what
    the header declares; otherwise ``data`` is only the header's bytes (a stream read so far). Any
    header declaring more than ``MAX_IDX_BYTES`` (dimensions whose product would overflow) is refused.
    """
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header")
    zero, dtype, nd = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        raise DataError(f"{path}: not an IDX file (magic 0x{bytes(data[:4]).hex()}, expected 0x00000803 or 0x00000801)")
    if dtype != _UBYTE:
        raise DataError(f"{path}: IDX element type 0x{dtype:02x} is not supported (expected 0x08, unsigned byte)")
    allowed = (1, 3) if ndim is None else (ndim,)
    if nd not in allowed:
        expected = " or ".join(map(str, allowed))
        raise DataError(f"{path}: IDX file has {nd} dimensions, expected {expected} (magic 0x{bytes(data[:4]).hex()})")
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(nd))
    if math.prod(max(d, 1) for d in dims) > MAX_IDX_BYTES:
        shape = " x ".join(map(str, dims))
        raise DataError(f"{path}: IDX header declares {shape} elements, more than the {MAX_IDX_BYTES:,} bytes "
                        "convzoo reads (a damaged or hostile header)")
    if complete:
        _check_length(dims, len(data) - header, 0, path)
    return dims, header


def _check_length(dims: tuple[int, ...], payload: int, extra: int, path: str | Path) -> None:
    """Refuse a payload of ``payload`` bytes (then ``extra`` more) that is not the ``dims`` declared."""
    expected_len = math.prod(dims)
    shape = " x ".join(map(str, dims))
    if payload + extra == expected_len:
        return
    if payload < expected_len:
        what, have = "truncated", f"{payload}"
    elif extra > _EXTRA_COUNTED:
        what, have = f"more than {_EXTRA_COUNTED:,} extra bytes after the data", f"more than {payload + extra}"
    else:
        what, have = f"{payload + extra - expected_len} extra bytes after the data", f"{payload + extra}"
    raise DataError(f"{path}: {what}: header says {shape} = {expected_len} bytes of data, file has {have}")


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
        raw = read_raw(path)
        data = gunzip(raw, path, ndim)
        dims, header = idx_header(data, path, ndim)
        if entry is not None and raw[:2] == _GZIP_MAGIC:
            _write_entry(entry, data)
    else:
        dims, header = idx_header(data, path, ndim)
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


def _digest_path(entry: Path) -> Path:
    """The file beside a cache entry that records its size and SHA-256, written with it."""
    return entry.with_name(entry.name + ".sha256")


def _recorded(entry: Path) -> tuple[int, str, int] | None:
    """``(size, sha256, crc32)`` recorded for cache ``entry``; None when the record is missing or unreadable."""
    try:
        size, digest, crc = _digest_path(entry).read_text().split()
        return int(size), digest, int(crc, 16)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _read_entry(entry: Path) -> memoryview | None:
    """The content of cache ``entry``; None when it is missing, unreadable, not the size and CRC-32 recorded when
    it was written or not a valid IDX file. The CRC costs a few milliseconds per 47 MB, a tenth of
    decompressing; ``check_cache`` also compares the SHA-256."""
    recorded = _recorded(entry)
    if recorded is None:
        return None
    try:
        data = read_raw(entry)
        if len(data) != recorded[0] or zlib.crc32(data) != recorded[2]:
            return None
        idx_header(data, entry)
    except DataError:
        return None
    return data


def _write_entry(entry: Path, data: bytes | memoryview) -> None:
    """Store ``data`` as ``entry`` and delete the entries of earlier versions of the same file, if possible."""
    try:
        with atomic_path(entry) as tmp:
            tmp.write_bytes(data)
        with atomic_path(_digest_path(entry)) as tmp:
            tmp.write_text(f"{len(data)} {hashlib.sha256(data).hexdigest()} {zlib.crc32(data):08x}\n")
        same_source = entry.name.rsplit(".", 1)[0] + "."
        for old in entry.parent.iterdir():
            if old.name.startswith(same_source) and old not in (entry, _digest_path(entry)):
                old.unlink(missing_ok=True)
    except (OSError, UserError):
        pass  # read-only or full: the next read decompresses again


def check_cache() -> list[dict]:
    """Verify every raw copy in ``raw_cache_dir()`` against the size and SHA-256 recorded when it was written.

    Returns one row per entry: ``{file, path, ok, problem}``. An entry that fails is removed (with its
    record), so the next read decompresses its source again; the cache never needs repair by hand.
    """
    directory = raw_cache_dir()
    if not directory.is_dir():
        return []
    rows = []
    for entry in sorted(directory.iterdir()):
        if entry.name.endswith(".sha256") or entry.name.startswith(".") or not entry.is_file():
            continue
        recorded = _recorded(entry)
        try:
            data = entry.read_bytes()
        except OSError:
            data = b""
        ok = recorded is not None and recorded[:2] == (len(data), hashlib.sha256(data).hexdigest())
        if not ok:
            entry.unlink(missing_ok=True)
            _digest_path(entry).unlink(missing_ok=True)
        problem = None if ok else "no record of its digest" if recorded is None else "does not match its record"
        rows.append({"file": entry.name.split(".")[0], "path": str(entry), "ok": ok, "problem": problem})
    return rows


# ---------------------------------------------------------------------------------------------
# The user cache: downloads (see source.fetch) and the raw copies


def cache_root() -> Path:
    """convzoo's user cache: ``$XDG_CACHE_HOME/convzoo``, default ``~/.cache/convzoo``.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG Base Directory specification says: it would
    put the cache wherever the command happens to run.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "convzoo"


def cache_dir() -> Path:
    """Where ``fetch`` downloads Fashion-MNIST to: ``cache_root() / "fashion-mnist"``."""
    return cache_root() / "fashion-mnist"


def raw_cache_dir() -> Path:
    """Where ``read_idx`` keeps raw copies of the gzipped files it reads: ``cache_dir() / "raw"``.

    Deleting it is always safe; it only makes the next read of each file decompress it again.
    """
    return cache_dir() / "raw"
