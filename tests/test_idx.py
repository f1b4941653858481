"""convzoo.data.idx: reading IDX files and their errors, and the cache of decompressed copies."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convzoo.data.idx as idx_format
from convzoo.data.idx import cache_dir, raw_cache_dir, read_idx
from convzoo.data.source import FILES, check, load_split
from convzoo.errors import DataError
from idx_files import idx, make_dir, write


@pytest.fixture(scope="module", autouse=True)
def private_user_cache(tmp_path_factory):
    """Every read_idx here caches raw copies under a temporary directory, never the real user cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


# ---------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    path = write(tmp_path / ("f.gz" if gz else "f"), idx((3, 4, 5)), gz=gz)
    x = read_idx(path)
    assert x.dtype == torch.uint8 and x.shape == (3, 4, 5)
    assert torch.equal(x.flatten(), torch.arange(60, dtype=torch.uint8))


def cache_entries(directory: Path) -> list[Path]:
    """The raw copies in a cache directory (not the records of their digests written beside them)."""
    return [p for p in directory.iterdir() if not p.name.endswith(".sha256")]


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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x12\x34\x08\x03" + bytes(12), "not an IDX file (magic 0x12340803, expected 0x00000803 or 0x00000801)"),
        (b"\x00\x00\x08\x01", "truncated IDX header (4 bytes, expected 8)"),  # 4 bytes: a magic, no dimension
        (b"\x00\x00\x08", "3 bytes is too short for an IDX header"),
        (idx((2, 28, 28))[:-5], "truncated: header says 2 x 28 x 28 = 1568 bytes of data, file has 1563"),
        (idx((2, 3, 4)) + b"\0", "1 extra bytes after the data: header says 2 x 3 x 4 = 24 bytes of data, file has 25"),
        # Each dimension is a whole big-endian uint32: a high byte counts, in every position.
        (idx((1, 1, 1 << 24), b""), "truncated: header says 1 x 1 x 16777216 = 16777216 bytes of data, file has 0"),
        (idx((1 << 24, 1, 1), b""), "truncated: header says 16777216 x 1 x 1 = 16777216 bytes of data, file has 0"),
    ],
    ids=["bad-magic", "magic-only", "3-bytes", "truncated", "extra-byte", "dim-2**24-last", "dim-2**24-first"],
)
def test_read_idx_error_messages(tmp_path, content, message):
    path = write(tmp_path / "f", content, gz=False)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(e.value) == f"{path}: {message}"


def test_read_idx_empty_file_of_zero_items(tmp_path):
    """A header and no data is valid when a dimension is 0: an empty tensor of that shape."""
    labels = read_idx(write(tmp_path / "labels", idx((0,)), gz=False))
    assert labels.shape == (0,) and labels.dtype == torch.uint8
    assert read_idx(write(tmp_path / "images", idx((0, 28, 28)))).shape == (0, 28, 28)


def test_read_idx_unreadable_path(tmp_path):
    with pytest.raises(DataError) as e:
        read_idx(tmp_path)
    assert str(e.value) == f"{tmp_path}: cannot read: Is a directory"


def test_read_idx_from_a_named_pipe(tmp_path):
    """A pipe announces no size (``<(zcat f.gz)``): read_idx reads it to the end all the same."""
    fifo = tmp_path / "labels"
    os.mkfifo(fifo)
    content = idx((3, 4, 5))
    writer = threading.Thread(target=lambda: fifo.write_bytes(content), daemon=True)  # never blocks the exit
    writer.start()
    try:
        x = read_idx(fifo)
    finally:
        writer.join(timeout=10)
    assert x.dtype == torch.uint8 and x.flatten().tolist() == list(range(60))


def test_read_idx_gzipped_tensor_owns_its_memory(tmp_path, monkeypatch):
    """Each read decompresses into a buffer of its own: writing to one tensor never alters another read."""
    monkeypatch.setattr(idx_format, "_SETTLED_NS", 10**30)  # no caching: the tensor comes from the decompressed bytes
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    x = read_idx(path)
    x.fill_(200)
    assert read_idx(path).flatten().tolist() == list(range(60))


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
    monkeypatch.setattr(idx_format, "_SETTLED_NS", 0)
    return raw_cache_dir()


def no_gunzip(monkeypatch) -> None:
    def fail(*_):
        raise AssertionError("decompressed although the cache holds the file")

    monkeypatch.setattr(idx_format, "_Gunzip", fail)


def test_cache_second_load_skips_decompression(tmp_path, raw_cache, monkeypatch):
    root = make_dir(tmp_path / "d")
    first = {split: load_split(split, root) for split in FILES}
    assert len(list(cache_entries(raw_cache))) == 4
    no_gunzip(monkeypatch)
    for split, (images, labels) in first.items():
        again = load_split(split, root)
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
    assert len(list(cache_entries(raw_cache))) == 1  # the old version's entry is gone


def test_cache_waits_until_a_file_has_settled(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    read_idx(path)
    assert not raw_cache_dir().exists()  # a second write in the same clock tick could keep its stat
    now = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: now + idx_format._SETTLED_NS)
    read_idx(path)
    assert len(list(cache_entries(raw_cache_dir()))) == 1


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
    assert not raw_cache.is_dir() or list(cache_entries(raw_cache)) == []  # no partial file left behind


@pytest.mark.parametrize(
    "damage", [b"", b"\x00\x00\x08\x03 truncated", b"not idx at all"], ids=["empty", "truncated", "not-idx"]
)
def test_cache_corrupt_entry_is_replaced(tmp_path, raw_cache, damage):
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    expected = read_idx(path)
    [entry] = cache_entries(raw_cache)
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
    assert len(list(cache_entries(raw_cache))) == 1  # the entry of the valid version, unused


def test_check_reads_the_files_not_the_cache(tmp_path, raw_cache):
    root = make_dir(tmp_path / "d")
    load_split("train", root)
    for entry in cache_entries(raw_cache):  # valid IDX, other content: only a reader of the cache would see it
        content = entry.read_bytes()
        entry.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    real = hashlib.sha256(gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes())).hexdigest()
    assert check(root)[0]["sha256"] == real


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "convzoo" / "fashion-mnist"


def test_a_cached_copy_of_another_size_is_not_used(tmp_path, raw_cache, monkeypatch):
    """Every read compares the copy's size with the record written with it."""
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    expected = read_idx(path)
    [entry] = cache_entries(raw_cache)
    entry.write_bytes(idx((3, 4, 5)) + b"\0")  # one byte longer than recorded
    assert torch.equal(read_idx(path), expected)
    assert entry.read_bytes() == idx((3, 4, 5))  # rewritten from the source


def test_data_check_verifies_the_cache(tmp_path, raw_cache):
    from convzoo.data.idx import check_cache

    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    read_idx(path)
    [entry] = cache_entries(raw_cache)
    assert [row["ok"] for row in check_cache()] == [True]
    content = bytearray(entry.read_bytes())
    content[-1] ^= 1  # the same size: only the digest tells
    entry.write_bytes(bytes(content))
    [row] = check_cache()
    assert not row["ok"] and row["problem"] == "does not match its record"
    assert cache_entries(raw_cache) == [] and list(raw_cache.iterdir()) == []  # removed, with its record
    read_idx(path)
    assert [row["ok"] for row in check_cache()] == [True]  # and written again by the next read


def test_raw_cache_dir_is_raw_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert raw_cache_dir() == tmp_path / "convzoo" / "fashion-mnist" / "raw"


def test_cache_entry_name_is_the_file_name_then_two_hashes(tmp_path, raw_cache):
    """``NAME.WHERE.WHAT``: the name without ``.gz``, then 12 hex digits of the location's hash, 12 of the version's."""
    path = write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx((4,)))
    read_idx(path)
    [entry] = cache_entries(raw_cache)
    name, where, what = entry.name.split(".")
    assert name == "t10k-labels-idx1-ubyte"
    assert where == hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:12]
    assert re.fullmatch("[0-9a-f]{12}", what)


def test_cache_takes_a_file_exactly_when_it_has_settled(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    settled = path.stat().st_ctime_ns + idx_format._SETTLED_NS
    monkeypatch.setattr(time, "time_ns", lambda: settled - 1)
    read_idx(path)
    assert not raw_cache_dir().exists()
    monkeypatch.setattr(time, "time_ns", lambda: settled)
    read_idx(path)
    assert len(cache_entries(raw_cache_dir())) == 1


def test_cache_keeps_the_entries_of_files_of_the_same_name_in_other_directories(tmp_path, raw_cache, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a" / "labels.gz", idx((4,), bytes([1, 2, 3, 4])))
    second = write(tmp_path / "b" / "labels.gz", idx((4,), bytes([5, 6, 7, 8])))
    read_idx(first)
    read_idx(second)
    assert len(cache_entries(raw_cache)) == 2  # a new entry replaces only the older versions of its own file
    no_gunzip(monkeypatch)
    assert [read_idx(p).tolist() for p in (first, second)] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_cache_cleanup_goes_on_past_an_entry_removed_meanwhile(tmp_path, raw_cache, monkeypatch):
    """Another process may delete an old entry between listing the cache and unlinking it: the rest is still removed."""
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(idx((3, 4, 5)), mtime=0))
    read_idx(path)
    [old] = cache_entries(raw_cache)
    replace_in_place_with_later_mtime(path, idx((3, 4, 5), bytes(range(100, 160))))
    iterdir = Path.iterdir
    gone = old.with_name(old.name.rsplit(".", 1)[0] + ".000000000000")  # listed, then deleted by another process
    with monkeypatch.context() as m:
        m.setattr(Path, "iterdir", lambda self: iter([gone, *sorted(iterdir(self))]))
        assert read_idx(path).flatten()[:3].tolist() == [100, 101, 102]
    assert not old.exists() and len(cache_entries(raw_cache)) == 1


def test_check_cache_rows(tmp_path, raw_cache):
    """One row per entry, in name order: its source's name, its path, whether it matches its record, and why not."""
    from convzoo.data.idx import check_cache

    for name in ("a-labels.gz", "b-labels.gz", "c-labels.gz"):
        read_idx(write(tmp_path / name, idx((4,))))
    a, b, c = sorted(cache_entries(raw_cache))
    (raw_cache / f"{b.name}.sha256").unlink()  # an entry without its record
    c.write_bytes(idx((4,), b"\x00\x00\x00\x01"))  # the same size, another digest
    assert check_cache() == [
        {"file": "a-labels", "path": str(a), "ok": True, "problem": None},
        {"file": "b-labels", "path": str(b), "ok": False, "problem": "no record of its digest"},
        {"file": "c-labels", "path": str(c), "ok": False, "problem": "does not match its record"},
    ]
    assert sorted(p.name for p in raw_cache.iterdir()) == [a.name, f"{a.name}.sha256"]  # failed ones removed


def test_check_cache_skips_what_is_not_an_entry(tmp_path, raw_cache):
    """A writer's temporary file (hidden), a directory and the records are not entries: not listed, not removed."""
    from convzoo.data.idx import check_cache

    read_idx(write(tmp_path / "f.gz", idx((4,))))
    [entry] = cache_entries(raw_cache)
    hidden = raw_cache / f".{entry.name}.1a2b3c4d.tmp"
    hidden.write_bytes(b"half written")
    (raw_cache / "subdirectory").mkdir()
    assert [row["ok"] for row in check_cache()] == [True]
    assert hidden.exists() and (raw_cache / "subdirectory").is_dir() and entry.exists()


def test_check_cache_entry_removed_meanwhile(tmp_path, raw_cache, monkeypatch):
    """An entry deleted by another process between listing and reading is reported, not an error."""
    from convzoo.data.idx import check_cache

    read_idx(write(tmp_path / "f.gz", idx((4,))))
    [entry] = cache_entries(raw_cache)
    read_bytes = Path.read_bytes

    def deleted_meanwhile(self):
        if self == entry:
            self.unlink()
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", deleted_meanwhile)
    [row] = check_cache()
    assert (row["ok"], row["problem"]) == (False, "does not match its record")
    assert list(raw_cache.iterdir()) == []  # its record is removed too


# ---------------------------------------------------------------------------------------------
# Issue 23: bombs, damaged caches, a relative XDG_CACHE_HOME


def test_cache_damaged_in_place_is_noticed_on_the_everyday_read(tmp_path, raw_cache):
    """Same size, one byte changed after it was written: the CRC recorded with it catches it, no `data check` needed."""
    path = write(tmp_path / "f.gz", idx((3, 4, 5)))
    expected = read_idx(path)
    [entry] = cache_entries(raw_cache)
    damaged = bytearray(entry.read_bytes())
    damaged[-1] ^= 0xFF
    entry.write_bytes(bytes(damaged))
    assert torch.equal(read_idx(path), expected)
    assert entry.read_bytes() == idx((3, 4, 5))  # rewritten from the source


def test_a_damaged_cache_is_rebuilt_by_the_everyday_command(tmp_path, raw_cache, run_cli):
    """`data show` reads through the cache: damaged entries are rewritten from their sources, none served."""
    from convzoo.data.idx import check_cache

    root = make_dir(tmp_path / "d")
    truth = load_split("train", root)
    for entry in cache_entries(raw_cache):
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0x55
        entry.write_bytes(bytes(data))
    code, _, err = run_cli("data", "show", "--data-dir", str(root), "--out", str(tmp_path / "s.png"), "--count", "2")
    assert code == 0, err
    assert all(row["ok"] for row in check_cache()) and len(check_cache()) == 2  # the training split's two files
    assert torch.equal(load_split("train", root)[0], truth[0])


@pytest.mark.parametrize("value", ["relative/cache", ".", ""])
def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path, value):
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "convzoo" / "fashion-mnist"


def test_gzip_with_more_data_than_its_header_declares_stops_at_the_declared_length(tmp_path):
    content = idx((2, 3, 4)) + bytes(5000)
    with pytest.raises(DataError, match="5000 extra bytes after the data: header says 2 x 3 x 4 = 24 bytes"):
        read_idx(write(tmp_path / "f.gz", content))


def test_gzip_of_several_members_is_read_whole(tmp_path):
    content = idx((2, 3, 4))
    (tmp_path / "f.gz").write_bytes(gzip.compress(content[:10]) + gzip.compress(content[10:]))
    assert read_idx(tmp_path / "f.gz").flatten().tolist() == list(range(24))


def test_gzip_with_garbage_after_it_is_refused(tmp_path):
    (tmp_path / "f.gz").write_bytes(gzip.compress(idx((2, 3, 4))) + b"junk")
    with pytest.raises(DataError, match="garbage after the compressed data"):
        read_idx(tmp_path / "f.gz")


def test_header_declaring_more_than_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    from convzoo.data import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 10_000)
    path = write(tmp_path / "f.gz", idx((100, 28, 28), b""))
    with pytest.raises(DataError, match="its header declares 78,416 bytes.*needs 76.6 KiB of memory"):
        read_idx(path)


@settings(max_examples=200, deadline=None)
@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3), gz=st.booleans())
def test_any_idx_header_is_read_or_refused_in_one_line(tmp_path_factory, dims, gz):
    """Arbitrary dimensions (overflowing ones too) with a small payload: a tensor of that shape, or a DataError."""
    path = tmp_path_factory.mktemp("h") / ("f.gz" if gz else "f")
    payload = bytes(min(math.prod(dims), 64))
    write(path, idx(tuple(dims), payload), gz=gz)
    try:
        x = read_idx(path)
    except DataError as e:
        assert "\n" not in str(e)
    else:
        assert tuple(x.shape) == tuple(dims) and x.numel() == len(payload)


BOMB_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from convzoo.data import read_idx
from convzoo.errors import DataError
for path in sys.argv[1:]:
    try:
        read_idx(path)
    except DataError as e:
        print("refused:", e)
"""


def test_gzip_bombs_are_refused_within_a_memory_limit(tmp_path):
    """4 GiB bombs (4 MiB of gzip each) as given through --data-dir or $CONVZOO_DATA, read by a child limited to
    1.5 GiB of address space: one whose header is plausible (stopped at the length it declares), one whose
    header declares more than can exist (refused before any allocation)."""
    member = gzip.compress(bytes(1 << 24), compresslevel=9)  # 16 MiB of zeros in 16 KiB
    bombs = []
    for name, header in [("plausible", (60_000, 28, 28)), ("overflowing", (2**32 - 1, 2**16, 2**16))]:
        bomb = tmp_path / name / "train-images-idx3-ubyte.gz"
        bomb.parent.mkdir()
        with open(bomb, "wb") as f:
            f.write(gzip.compress(idx(header, b"")))
            for _ in range(256):  # 4 GiB of zeros, as members of one gzip stream
                f.write(member)
        assert bomb.stat().st_size < 8 << 20
        bombs.append(str(bomb))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", BOMB_CHILD, *bombs], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plausible, overflowing = proc.stdout.splitlines()
    assert plausible.startswith("refused:") and "more than 67,108,864 extra bytes after the data" in plausible
    assert overflowing.startswith("refused:") and "more than the 1,099,511,627,776 bytes" in overflowing
