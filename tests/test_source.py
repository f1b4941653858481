"""convzoo.data.source: loading a split, finding the data set, checking and fetching it."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
from pathlib import Path

import pytest
import torch

from convzoo.data import source
from convzoo.data.idx import cache_dir
from convzoo.data.source import FILES
from convzoo.errors import DataError, UserError
from idx_files import idx, make_dir, write

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
NAMES = [name for pair in FILES.values() for name in pair]


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
    monkeypatch.setattr(source, "DEBIAN_DIR", tmp_path / "no-debian")


# ---------------------------------------------------------------------------------------------
# load_split


def test_load_split_slice():
    images, labels = source.load_split("train", SLICE)
    assert images.shape == (2000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() <= 9
    assert len(source.load_split("test", SLICE)[0]) == 1000


def test_load_split_count_mismatch(tmp_path):
    root = make_dir(tmp_path / "d", n_train=6, train_labels=bytes(5))
    with pytest.raises(DataError, match="6 images but .* 5 labels") as e:
        source.load_split("train", root)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_load_split_label_out_of_range(tmp_path):
    root = make_dir(tmp_path / "d", n_train=4, train_labels=bytes([1, 2, 10, 3]))
    with pytest.raises(DataError, match=r"label 10 at index 2 is outside 0\.\.9") as e:
        source.load_split("train", root)
    assert "train-labels-idx1-ubyte.gz" in str(e.value)


def test_load_split_wrong_image_size(tmp_path):
    root = make_dir(tmp_path / "d", side=32)
    with pytest.raises(DataError, match="32x32, expected 28x28") as e:
        source.load_split("train", root)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_load_split_labels_with_image_header(tmp_path):
    root = make_dir(tmp_path / "d")
    write(root / "t10k-labels-idx1-ubyte.gz", idx((4, 28, 28)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: IDX file has 3 dimensions, expected 1"):
        source.load_split("test", root)


def test_load_split_unknown_split():
    with pytest.raises(DataError, match="unknown split 'val'"):
        source.load_split("val", SLICE)


# ---------------------------------------------------------------------------------------------
# find_data_dir


def test_find_data_dir_order(monkeypatch, tmp_path, no_data_env):
    explicit, env, cache, debian = (make_dir(tmp_path / n) for n in ("explicit", "env", "xdg", "debian"))
    monkeypatch.setattr(source, "DEBIAN_DIR", debian)
    assert source.find_data_dir() == debian
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-root"))
    shutil.copytree(cache, cache_dir())
    assert cache_dir() == tmp_path / "xdg-root" / "convzoo" / "fashion-mnist"
    assert source.find_data_dir() == cache_dir()
    monkeypatch.setenv("CONVZOO_DATA", str(env))
    assert source.find_data_dir() == env
    assert source.find_data_dir(explicit) == explicit
    assert source.find_data_dir(str(explicit)) == explicit


def test_find_data_dir_accepts_raw_files(tmp_path, no_data_env):
    root = make_dir(tmp_path / "d")
    gz = root / "train-images-idx3-ubyte.gz"
    (root / "train-images-idx3-ubyte").write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    assert source.find_data_dir(root) == root
    assert source.load_split("train", root)[0].shape == (6, 28, 28)


def test_find_data_dir_nothing_found(no_data_env):
    with pytest.raises(DataError, match="convzoo data fetch") as e:
        source.find_data_dir()
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


def test_find_data_dir_missing_explicit_dir(tmp_path, no_data_env):
    with pytest.raises(DataError, match="does not exist") as e:
        source.find_data_dir(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(e.value)


def test_find_data_dir_explicit_dir_missing_files_does_not_fall_back(monkeypatch, tmp_path, no_data_env):
    monkeypatch.setattr(source, "DEBIAN_DIR", make_dir(tmp_path / "debian"))
    partial = make_dir(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte") as e:
        source.find_data_dir(partial)
    assert str(partial) in str(e.value)
    monkeypatch.setenv("CONVZOO_DATA", str(partial))
    with pytest.raises(DataError, match="CONVZOO_DATA directory .* lacks t10k-labels-idx1-ubyte"):
        source.find_data_dir()


# ---------------------------------------------------------------------------------------------
# check and fetch


def test_check_reports_mismatch_without_raising():
    rows = source.check(SLICE)
    assert [r["file"] for r in rows] == NAMES
    assert not any(r["ok"] for r in rows)  # a slice is not the official file
    assert [r["count"] for r in rows] == [2000, 2000, 1000, 1000]
    assert rows[0]["sha256"] == slice_checksums()[NAMES[0]]


def test_check_unreadable_or_invalid_file_raises(tmp_path):
    root = make_dir(tmp_path / "d")
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        source.check(root)
    write(root / "train-labels-idx1-ubyte.gz", idx((6,), bytes(4)))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: truncated: header says 6 = 6 bytes"):
        source.check(root)


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
    assert source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums()) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    for name in NAMES:
        assert (dest / f"{name}.gz").read_bytes() == (SLICE / f"{name}.gz").read_bytes()
    assert source.load_split("test", dest)[0].shape == (1000, 28, 28)


def test_fetch_accepts_official_md5_of_the_gz(tmp_path, mirror, monkeypatch):
    # Pretend the slice's .gz files are the official ones by MD5 only; no SHA-256 matches.
    md5 = {name: hashlib.md5((SLICE / f"{name}.gz").read_bytes()).hexdigest() for name in NAMES}
    monkeypatch.setattr(source, "MD5_GZ", md5)
    monkeypatch.setattr(source, "SHA256", dict.fromkeys(NAMES, "0" * 64))
    dest = source.fetch(tmp_path / "dest", mirror=mirror, progress=False)
    assert len(list(dest.iterdir())) == 4


def test_fetch_skips_valid_files(tmp_path, mirror, monkeypatch):
    dest = tmp_path / "dest"
    source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())

    def no_network(*args, **kwargs):
        raise AssertionError("fetch downloaded a file it already had")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())


def test_fetch_replaces_corrupt_existing_file(tmp_path, mirror):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
    assert source.load_split("train", dest)[1].shape == (2000,)


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path, mirror):
    dest = tmp_path / "dest"
    # The official checksums: the slice matches none of them.
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz does not match the expected checksum"):
        source.fetch(dest, mirror=mirror, progress=False)
    assert list(dest.iterdir()) == []


def test_fetch_missing_file_on_mirror(tmp_path, mirror):
    (tmp_path / "mirror" / "t10k-images-idx3-ubyte.gz").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="download of .*t10k-images-idx3-ubyte.gz failed"):
        source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
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
        source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
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
        source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "mirror, message",
    [("nosuchscheme://x", "failed: unknown url type"), ("no/scheme", "cannot download no/scheme/train-images")],
)
def test_fetch_bad_url(tmp_path, mirror, message):
    with pytest.raises(DataError, match=message):
        source.fetch(tmp_path / "dest", mirror=mirror, progress=False)


# ---------------------------------------------------------------------------------------------
# The real data set


@pytest.mark.skipif(not source.DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_full_data_set(monkeypatch):
    monkeypatch.delenv("CONVZOO_DATA", raising=False)
    directory = source.find_data_dir()
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = source.load_split(split, directory)
        assert images.shape == (n, 28, 28)
        assert torch.bincount(labels).tolist() == [n // 10] * 10
    rows = source.check(directory)
    assert [r["ok"] for r in rows] == [True] * 4
    assert [r["count"] for r in rows] == [60000, 60000, 10000, 10000]
