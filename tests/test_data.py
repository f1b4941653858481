"""convzoo.data: IDX reading and its errors, locating and fetching the data set, batching, plotting."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import shutil
import struct
import time
import urllib.request
from pathlib import Path

import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convzoo import data, fileio
from convzoo.data import FILES, Batches, DataError, read_idx
from convzoo.errors import UserError

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
NAMES = [name for pair in FILES.values() for name in pair]


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


def slice_checksums() -> dict[str, str]:
    return {name: hashlib.sha256(gzip.decompress((SLICE / f"{name}.gz").read_bytes())).hexdigest() for name in NAMES}


@pytest.fixture(scope="module", autouse=True)
def private_user_cache(tmp_path_factory):
    """Every read_idx here caches raw copies under a temporary directory, never the real user cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture
def no_data_env(monkeypatch, tmp_path):
    """No CONVZOO_DATA, an empty cache, and no Debian directory."""
    monkeypatch.delenv("CONVZOO_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")


# ---------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    path = write(tmp_path / ("f.gz" if gz else "f"), idx((3, 4, 5)), gz=gz)
    x = read_idx(path)
    assert x.dtype == torch.uint8 and x.shape == (3, 4, 5)
    assert torch.equal(x.flatten(), torch.arange(60, dtype=torch.uint8))


def test_read_idx_raw_bytes_under_gz_name(tmp_path):
    path = write(tmp_path / "labels.gz", idx((4,), b"\x01\x02\x03\x04"), gz=False)
    assert read_idx(path).tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "content, gz, needles",
    [
        pytest.param(idx((2, 28, 28), magic=b"\x12\x34\x08\x03"), True, ["0x12340803", "not an IDX"], id="bad-magic"),
        pytest.param(idx((2, 28, 28), magic=b"\x00\x00\x0d\x03"), True, ["0x0d", "0x08"], id="float-type"),
        pytest.param(idx((2, 28)), True, ["2 dimensions", "1 or 3"], id="ndim-2"),
        pytest.param(idx((2, 28, 28))[:-5], True, ["truncated", "1568", "1563"], id="truncated-payload"),
        pytest.param(idx((2, 28, 28)) + b"\0\0\0", True, ["3 extra bytes", "1568"], id="extra-bytes"),
        pytest.param(b"\x00\x00\x08\x03\x00\x00\x00\x02", True, ["truncated IDX header", "16"], id="short-header"),
        pytest.param(b"\x00\x00", False, ["2 bytes", "too short"], id="tiny"),
    ],
)
def test_read_idx_rejects(tmp_path, content, gz, needles):
    path = write(tmp_path / "bad.gz", content, gz=gz)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value)
    for needle in needles:
        assert needle in str(e.value)


def test_read_idx_truncated_gzip(tmp_path):
    full = gzip.compress(idx((20, 28, 28)), mtime=0)
    path = tmp_path / "cut.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")


def test_read_idx_expected_ndim(tmp_path):
    path = write(tmp_path / "labels.gz", idx((5, 28, 28)))
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        read_idx(path, ndim=1)


# Overwriting one file per example is fine, so the function-scoped tmp_path is safe to share.
_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_or_data_error(path: Path) -> None:
    try:
        x = read_idx(path)
    except DataError:
        return
    assert x.dtype == torch.uint8 and x.dim() in (1, 3)


@_fuzz
@given(content=st.binary(max_size=200), name=st.sampled_from(["f", "f.gz"]))
def test_read_idx_random_bytes(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    _read_or_data_error(path)


@_fuzz
@given(
    dims=st.lists(st.integers(0, 6), min_size=0, max_size=4),
    type_byte=st.sampled_from([0x08, 0x09, 0x0B]),
    extra=st.integers(-10, 10),
    gz=st.booleans(),
)
def test_read_idx_structured_headers(tmp_path, dims, type_byte, extra, gz):
    payload = bytes(max(0, math.prod(dims) + extra))
    content = idx(tuple(dims), payload, magic=bytes([0, 0, type_byte, len(dims)]))
    path = write(tmp_path / "f.gz", content, gz=gz)
    _read_or_data_error(path)


@_fuzz
@given(st.data())
def test_read_idx_mutated_gzip(tmp_path, draw):
    valid = bytearray(gzip.compress(idx((3, 28, 28)), mtime=0))
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw.draw(st.integers(0, len(valid) - 1)) if valid else 0
        if op == "flip" and valid:
            valid[i] ^= draw.draw(st.integers(1, 255))
        elif op == "cut":
            del valid[i:]
        else:
            valid[i:i] = draw.draw(st.binary(min_size=1, max_size=8))
    path = tmp_path / "f.gz"
    path.write_bytes(bytes(valid))
    _read_or_data_error(path)


# ---------------------------------------------------------------------------------------------
# The cache of decompressed files


@pytest.fixture
def raw_cache(monkeypatch, tmp_path) -> Path:
    """An empty cache that also takes files written a moment ago; returns its raw_cache_dir()."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "_SETTLED_NS", 0)
    return data.raw_cache_dir()


def no_gunzip(monkeypatch) -> None:
    def fail(_):
        raise AssertionError("decompressed although the cache holds the file")

    monkeypatch.setattr(gzip, "decompress", fail)


def test_cache_second_load_skips_decompression(tmp_path, raw_cache, monkeypatch):
    root = make_dir(tmp_path / "d")
    first = {split: data.load_split(split, root) for split in FILES}
    assert len(list(raw_cache.iterdir())) == 4
    no_gunzip(monkeypatch)
    for split, (images, labels) in first.items():
        again = data.load_split(split, root)
        assert torch.equal(again[0], images) and torch.equal(again[1], labels)
        again[0][0, 0, 0] = 255  # the tensor owns a writable buffer


def test_cache_takes_only_gzipped_files(tmp_path, raw_cache):
    read_idx(write(tmp_path / "raw.gz", idx((4,)), gz=False))
    read_idx(write(tmp_path / "raw", idx((4,)), gz=False))
    assert not raw_cache.exists()


def replace_in_place_with_later_mtime(path: Path, content: bytes) -> None:
    before = path.stat()
    write(path, content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))


def replace_keeping_size_and_mtime(path: Path, content: bytes) -> None:
    """What ``cp -p`` or ``rsync -t`` do: new content under the old name and mtime."""
    before = path.stat()
    new = path.with_name("new.gz")
    new.write_bytes(gzip.compress(content, compresslevel=0, mtime=0))  # stored: as long as the first version
    assert new.stat().st_size == before.st_size
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(new, path)


@pytest.mark.parametrize("replace", [replace_in_place_with_later_mtime, replace_keeping_size_and_mtime])
def test_cache_never_serves_a_changed_file(tmp_path, raw_cache, replace):
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(idx((3, 4, 5)), compresslevel=0, mtime=0))
    assert read_idx(path).flatten()[:3].tolist() == [0, 1, 2]
    replace(path, idx((3, 4, 5), bytes(range(100, 160))))
    assert read_idx(path).flatten()[:3].tolist() == [100, 101, 102]
    assert len(list(raw_cache.iterdir())) == 1  # the old version's entry is gone


def test_cache_waits_until_a_file_has_settled(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    read_idx(path)
    assert not data.raw_cache_dir().exists()  # a second write in the same clock tick could keep its stat
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now + data._SETTLED_NS)
    read_idx(path)
    assert len(list(data.raw_cache_dir().iterdir())) == 1


def cache_dir_is_a_file(raw_cache: Path, monkeypatch) -> None:
    raw_cache.parent.mkdir(parents=True)
    raw_cache.write_bytes(b"")


def disk_full_halfway(raw_cache: Path, monkeypatch) -> None:
    write_bytes = Path.write_bytes

    def half_then_full(self, content):
        write_bytes(self, content[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)


@pytest.mark.parametrize("break_cache", [cache_dir_is_a_file, disk_full_halfway])
def test_cache_unwritable_falls_back(tmp_path, raw_cache, monkeypatch, break_cache):
    content = idx((3, 4, 5))
    path = write(tmp_path / "f.gz", content)
    break_cache(raw_cache, monkeypatch)
    assert read_idx(path).flatten().tolist() == list(content[16:])
    assert not raw_cache.is_dir() or list(raw_cache.iterdir()) == []  # no partial file left behind


@pytest.mark.parametrize(
    "damage", [b"", b"\x00\x00\x08\x03 truncated", b"not idx at all"], ids=["empty", "truncated", "not-idx"]
)
def test_cache_corrupt_entry_is_replaced(tmp_path, raw_cache, damage):
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    expected = read_idx(path)
    [entry] = raw_cache.iterdir()
    entry.write_bytes(damage)
    assert torch.equal(read_idx(path), expected)
    assert entry.read_bytes() == idx((3, 4, 5))


def test_cache_hit_reports_errors_as_the_file_does(tmp_path, raw_cache, monkeypatch):
    path = write(tmp_path / "labels.gz", idx((5, 28, 28)))
    with pytest.raises(DataError) as uncached:
        read_idx(path, ndim=1)
    read_idx(path, ndim=3)
    no_gunzip(monkeypatch)
    with pytest.raises(DataError) as cached:
        read_idx(path, ndim=1)
    assert str(cached.value) == str(uncached.value)
    assert str(cached.value) == f"{path}: IDX file has 3 dimensions, expected 1 (magic 0x00000803)"


def test_cache_never_hides_a_broken_or_missing_file(tmp_path, raw_cache):
    path = write(tmp_path / "labels.gz", idx((5, 28, 28)))
    read_idx(path)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: corrupt or truncated gzip"):
        read_idx(path)
    path.unlink()
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: file not found"):
        read_idx(path)
    assert len(list(raw_cache.iterdir())) == 1  # the entry of the valid version, unused


def test_check_reads_the_files_not_the_cache(tmp_path, raw_cache):
    root = make_dir(tmp_path / "d")
    data.load_split("train", root)
    for entry in raw_cache.iterdir():  # valid IDX, other content: only a reader of the cache would see it
        content = entry.read_bytes()
        entry.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    real = hashlib.sha256(gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes())).hexdigest()
    assert data.check(root)[0]["sha256"] == real


# ---------------------------------------------------------------------------------------------
# load_split


def test_load_split_slice():
    images, labels = data.load_split("train", SLICE)
    assert images.shape == (2000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() <= 9
    assert len(data.load_split("test", SLICE)[0]) == 1000


def test_load_split_count_mismatch(tmp_path):
    root = make_dir(tmp_path / "d", n_train=6, train_labels=bytes(5))
    with pytest.raises(DataError, match="6 images but .* 5 labels") as e:
        data.load_split("train", root)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_load_split_label_out_of_range(tmp_path):
    root = make_dir(tmp_path / "d", n_train=4, train_labels=bytes([1, 2, 10, 3]))
    with pytest.raises(DataError, match=r"label 10 at index 2 is outside 0\.\.9") as e:
        data.load_split("train", root)
    assert "train-labels-idx1-ubyte.gz" in str(e.value)


def test_load_split_wrong_image_size(tmp_path):
    root = make_dir(tmp_path / "d", side=32)
    with pytest.raises(DataError, match="32x32, expected 28x28") as e:
        data.load_split("train", root)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_load_split_labels_with_image_header(tmp_path):
    root = make_dir(tmp_path / "d")
    write(root / "t10k-labels-idx1-ubyte.gz", idx((4, 28, 28)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: IDX file has 3 dimensions, expected 1"):
        data.load_split("test", root)


def test_load_split_unknown_split():
    with pytest.raises(DataError, match="unknown split 'val'"):
        data.load_split("val", SLICE)


# ---------------------------------------------------------------------------------------------
# find_data_dir


def test_find_data_dir_order(monkeypatch, tmp_path, no_data_env):
    explicit, env, cache, debian = (make_dir(tmp_path / n) for n in ("explicit", "env", "xdg", "debian"))
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    assert data.find_data_dir() == debian
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-root"))
    shutil.copytree(cache, data.cache_dir())
    assert data.cache_dir() == tmp_path / "xdg-root" / "convzoo" / "fashion-mnist"
    assert data.find_data_dir() == data.cache_dir()
    monkeypatch.setenv("CONVZOO_DATA", str(env))
    assert data.find_data_dir() == env
    assert data.find_data_dir(explicit) == explicit
    assert data.find_data_dir(str(explicit)) == explicit


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / ".cache" / "convzoo" / "fashion-mnist"


def test_find_data_dir_accepts_raw_files(tmp_path, no_data_env):
    root = make_dir(tmp_path / "d")
    gz = root / "train-images-idx3-ubyte.gz"
    (root / "train-images-idx3-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert data.find_data_dir(root) == root
    assert data.load_split("train", root)[0].shape == (6, 28, 28)


def test_find_data_dir_nothing_found(no_data_env):
    with pytest.raises(DataError, match="convzoo data fetch") as e:
        data.find_data_dir()
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


def test_find_data_dir_missing_explicit_dir(tmp_path, no_data_env):
    with pytest.raises(DataError, match="does not exist") as e:
        data.find_data_dir(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(e.value)


def test_find_data_dir_explicit_dir_missing_files_does_not_fall_back(monkeypatch, tmp_path, no_data_env):
    monkeypatch.setattr(data, "DEBIAN_DIR", make_dir(tmp_path / "debian"))
    partial = make_dir(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte") as e:
        data.find_data_dir(partial)
    assert str(partial) in str(e.value)
    monkeypatch.setenv("CONVZOO_DATA", str(partial))
    with pytest.raises(DataError, match="CONVZOO_DATA directory .* lacks t10k-labels-idx1-ubyte"):
        data.find_data_dir()


# ---------------------------------------------------------------------------------------------
# check and fetch


def test_check_reports_mismatch_without_raising():
    rows = data.check(SLICE)
    assert [r["file"] for r in rows] == NAMES
    assert not any(r["ok"] for r in rows)  # a slice is not the official file
    assert [r["count"] for r in rows] == [2000, 2000, 1000, 1000]
    assert rows[0]["sha256"] == slice_checksums()[NAMES[0]]


def test_check_unreadable_or_invalid_file_raises(tmp_path):
    root = make_dir(tmp_path / "d")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        data.check(root)
    write(root / "train-labels-idx1-ubyte.gz", idx((6,), bytes(4)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: truncated: header says 6 = 6 bytes"):
        data.check(root)


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)


@pytest.fixture
def mirror(tmp_path) -> str:
    """A file:// mirror of the slice at tmp_path / "mirror"."""
    root = tmp_path / "mirror"
    shutil.copytree(SLICE, root)
    return root.as_uri() + "/"


def test_fetch_from_file_mirror(tmp_path, mirror):
    dest = tmp_path / "dest"
    assert data.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums()) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    for name in NAMES:
        assert (dest / f"{name}.gz").read_bytes() == (SLICE / f"{name}.gz").read_bytes()
    assert data.load_split("test", dest)[0].shape == (1000, 28, 28)


def test_fetch_accepts_official_md5_of_the_gz(tmp_path, mirror, monkeypatch):
    # Pretend the slice's .gz files are the official ones by MD5 only; no SHA-256 matches.
    md5 = {name: hashlib.md5((SLICE / f"{name}.gz").read_bytes()).hexdigest() for name in NAMES}
    monkeypatch.setattr(data, "MD5_GZ", md5)
    monkeypatch.setattr(data, "SHA256", dict.fromkeys(NAMES, "0" * 64))
    dest = data.fetch(tmp_path / "dest", mirror=mirror, progress=False)
    assert len(list(dest.iterdir())) == 4


def test_fetch_skips_valid_files(tmp_path, mirror, monkeypatch):
    dest = tmp_path / "dest"
    data.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())

    def no_network(*args, **kwargs):
        raise AssertionError("fetch downloaded a file it already had")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    data.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())


def test_fetch_replaces_corrupt_existing_file(tmp_path, mirror):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    data.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
    assert data.load_split("train", dest)[1].shape == (2000,)


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, mirror):
    dest = tmp_path / "dest"
    # The official checksums: the slice matches none of them.
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz does not match the expected checksum"):
        data.fetch(dest, mirror=mirror, progress=False)
    assert list(dest.iterdir()) == []


def test_fetch_missing_file_on_mirror(tmp_path, mirror):
    (tmp_path / "mirror" / "t10k-images-idx3-ubyte.gz").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="download of .*t10k-images-idx3-ubyte.gz failed"):
        data.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
    assert sorted(p.name for p in dest.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_fetch_interrupted_download_leaves_nothing(tmp_path, mirror, monkeypatch):
    real_urlopen = urllib.request.urlopen

    class Dropping:
        """A response that delivers some bytes, then loses the connection."""

        def __init__(self, response):
            self.response, self.calls = response, 0
            self.headers = response.headers

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection reset by peer")
            return self.response.read(1000)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Dropping(real_urlopen(url, timeout=timeout)))
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="failed: ConnectionResetError"):
        data.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
    assert list(dest.iterdir()) == []


def test_fetch_short_download_leaves_nothing(tmp_path, mirror, monkeypatch):
    real_urlopen = urllib.request.urlopen

    def short(url, timeout):
        response = real_urlopen(url, timeout=timeout)
        body = response.read(100)  # the server closes early without an error
        response.read = lambda n, body=[body]: body.pop() if body else b""
        return response

    monkeypatch.setattr(urllib.request, "urlopen", short)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="interrupted: received 100 of"):
        data.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "mirror, message",
    [("nosuchscheme://x", "failed: unknown url type"), ("no/scheme", "cannot download no/scheme/train-images")],
)
def test_fetch_bad_url(tmp_path, mirror, message):
    with pytest.raises(DataError, match=message):
        data.fetch(tmp_path / "dest", mirror=mirror, progress=False)


# ---------------------------------------------------------------------------------------------
# Batches and to_input


@pytest.fixture(scope="module")
def small() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = data.load_split("test", SLICE)
    return images[:100], labels[:100]


def collect(batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_to_input_shapes_and_scale(small):
    images = small[0][:5]
    x = data.to_input(images, None)
    assert x.dtype == torch.float32 and x.shape == (5, 1, 28, 28)
    assert torch.equal(x, images.unsqueeze(1).float() / 255)
    assert torch.equal(data.to_input(images.unsqueeze(1), 28), x)
    big = data.to_input(images, 96)
    assert big.shape == (5, 1, 96, 96) and 0 <= big.min() and big.max() <= 1
    expected = torch.nn.functional.interpolate(x, size=96, mode="bilinear", align_corners=False, antialias=False)
    assert torch.equal(big, expected)
    with pytest.raises(ValueError, match="uint8"):
        data.to_input(x, None)


def test_batches_shapes_and_coverage(small):
    images, labels = small
    batches = Batches(images, labels, 32, shuffle=True, seed=1)
    assert len(batches) == 4 and batches.num_examples == 100
    sizes = []
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
        assert 0 <= x.min() and x.max() <= 1
        sizes.append(len(x))
    assert sizes == [32, 32, 32, 4]
    x, y = collect(batches)
    # Every example exactly once: match each output row to its source by pixels.
    flat = images.flatten(1).float() / 255
    source = torch.cdist(x.flatten(1), flat).argmin(1)
    assert sorted(source.tolist()) == list(range(100))
    assert torch.equal(y, labels[source])
    assert source.tolist() != list(range(100))


def test_batches_order_reproducible_per_epoch(small):
    def order(seed, epoch):
        batches = Batches(*small, 25, shuffle=True, seed=seed)
        batches.set_epoch(epoch)
        return collect(batches)[0]

    assert torch.equal(order(0, 0), order(0, 0))
    assert not torch.equal(order(0, 0), order(0, 1))
    assert not torch.equal(order(0, 0), order(1, 0))
    assert torch.equal(order(0, 1), order(1, 0))  # the generator is seeded with seed + epoch


def test_batches_no_shuffle_keeps_order(small):
    x, y = collect(Batches(*small, 30))
    assert torch.equal(x, data.to_input(small[0], None)) and torch.equal(y, small[1])


def test_batches_resize(small):
    x, _ = next(iter(Batches(*small, 8, resize=96)))
    assert x.shape == (8, 1, 96, 96)
    assert torch.equal(x, data.to_input(small[0][:8], 96))


@pytest.mark.parametrize("resize, augment", [(None, False), (64, False), (None, True), (48, True)])
def test_batches_channels_last_are_the_same_pixels_in_nhwc_strides(small, resize, augment):
    common = dict(shuffle=True, seed=2, resize=resize, augment=augment)
    for (x, y), (x_cl, y_cl) in zip(Batches(*small, 32, **common), Batches(*small, 32, channels_last=True, **common),
                                    strict=True):
        assert torch.equal(x, x_cl) and torch.equal(y, y_cl)
        assert x_cl.stride(1) == 1 and x_cl.is_contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(1, 4, 3).to(memory_format=torch.channels_last)
        assert conv(x_cl).is_contiguous(memory_format=torch.channels_last)


def test_batches_drop_last(small):
    assert len(Batches(*small, 32, drop_last=True)) == 3
    assert [len(x) for x, _ in Batches(*small, 32, drop_last=True)] == [32, 32, 32]
    assert len(Batches(*small, 50, drop_last=True)) == 2


def test_batches_augment(small):
    images, labels = small
    batches = Batches(images, labels, 40, augment=True, seed=3)
    x, y = collect(batches)
    assert x.shape == (100, 1, 28, 28) and torch.equal(y, labels)
    assert torch.equal(x, collect(Batches(images, labels, 40, augment=True, seed=3))[0])
    batches.set_epoch(1)
    assert not torch.equal(x, collect(batches)[0])
    # Each output is its own image, possibly flipped, shifted by at most 2 pixels with zeros filled in.
    padded = torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2))
    flipped = unchanged = 0
    for i in range(100):
        candidates = {
            (f, dy, dx): (padded[i].flip(-1) if f else padded[i])[dy : dy + 28, dx : dx + 28]
            for f in (0, 1) for dy in range(5) for dx in range(5)
        }
        matches = [k for k, c in candidates.items() if torch.equal(c, x[i, 0])]
        assert matches, f"augmented image {i} is no flip/crop of its source"
        flipped += all(k[0] for k in matches)
        unchanged += (0, 2, 2) in matches
    assert 20 < flipped < 80 and unchanged < 30


def test_batches_distributed_shards_partition_global_batches(small):
    images, labels = small
    options = dict(shuffle=True, seed=5, augment=True)
    whole = list(Batches(images, labels, 32, **options))
    shards = [list(Batches(images, labels, 32, **options, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(whole) == 4
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shards, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert [len(x) for x, _ in shards[0]] == [16, 16, 16, 2]


def test_batches_distributed_last_batch_rules(small):
    images, labels = small
    # 100 = 3 * 33 + 1: a last batch of one row cannot be split over 3 ranks, so it is dropped.
    per_rank = [list(Batches(images, labels, 33, rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in per_rank] == [3, 3, 3]
    assert sum(len(x) for p in per_rank for x, _ in p) == 99
    # 100 = 2 * 48 + 4: the last 4 rows are split 1, 1, 2.
    per_rank = [list(Batches(images, labels, 48, rank=r, world_size=3)) for r in range(3)]
    assert [[len(x) for x, _ in p] for p in per_rank] == [[16, 16, 1], [16, 16, 1], [16, 16, 2]]
    with pytest.raises(ValueError, match="divisible by world_size"):
        Batches(images, labels, 33, world_size=2)


def test_batches_validates_arguments(small):
    images, labels = small
    with pytest.raises(ValueError, match="uint8"):
        Batches(images.float(), labels, 4)
    with pytest.raises(ValueError, match="labels must have shape"):
        Batches(images, labels[:5], 4)
    with pytest.raises(ValueError, match="rank"):
        Batches(images, labels, 4, rank=2, world_size=2)


# ---------------------------------------------------------------------------------------------
# The real data set


@pytest.mark.skipif(not data.DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_full_data_set(monkeypatch):
    monkeypatch.delenv("CONVZOO_DATA", raising=False)
    directory = data.find_data_dir()
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load_split(split, directory)
        assert images.shape == (n, 28, 28)
        assert torch.bincount(labels).tolist() == [n // 10] * 10
    rows = data.check(directory)
    assert [r["ok"] for r in rows] == [True] * 4
    assert [r["count"] for r in rows] == [60000, 60000, 10000, 10000]


# ---------------------------------------------------------------------------------------------
# show_grid


def test_show_grid_writes_png(tmp_path, small):
    images, labels = small
    out = tmp_path / "out" / "grid.png"
    path = data.show_grid(images[:12], labels[:12], out, predictions=labels[:12].flip(0), ncols=5)
    content = path.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 10_000
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    with PIL.Image.open(path) as png:
        assert png.format == "PNG" and png.width > 400 and png.height > 200


# ---------------------------------------------------------------------------------------------
# convzoo.fileio, which fetch and show_grid write through


def test_atomic_path_replaces_only_on_success(tmp_path):
    path = tmp_path / "sub" / "result.json"
    fileio.write_json(path, {"acc": 0.9, "epochs": [1, 2]})
    assert json.loads(path.read_text()) == {"acc": 0.9, "epochs": [1, 2]}
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp.suffix == ".json"
            tmp.write_text("{half")
            raise RuntimeError("crash while writing")
    assert json.loads(path.read_text())["acc"] == 0.9
    assert list(path.parent.iterdir()) == [path]
    fileio.write_text(path, "done\n")
    assert path.read_text() == "done\n"
