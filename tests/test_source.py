"""convzoo.data.source: loading a split, finding the data set, checking and fetching it."""

from __future__ import annotations

import email.message
import gzip
import hashlib
import io
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import convzoo.data.idx as idx_format
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


def test_load_split_images_with_label_header(tmp_path):
    root = make_dir(tmp_path / "d")
    write(root / "t10k-images-idx3-ubyte.gz", idx((4,)))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: IDX file has 1 dimensions, expected 3"):
        source.load_split("test", root)


def test_unknown_split_message_lists_the_splits():
    with pytest.raises(DataError) as e:
        source.load_split("val", SLICE)
    assert str(e.value) == "unknown split 'val', expected one of train, test"


def test_find_data_dir_messages_name_the_directory_and_every_missing_file(tmp_path, no_data_env, monkeypatch):
    with pytest.raises(DataError) as e:
        source.find_data_dir(tmp_path / "absent")
    assert str(e.value) == f"data directory {tmp_path / 'absent'} does not exist or is not a directory"
    partial = make_dir(tmp_path / "partial")
    for name in FILES["test"]:
        (partial / f"{name}.gz").unlink()
    with pytest.raises(DataError) as e:
        source.find_data_dir(partial)
    assert str(e.value) == f"data directory {partial} lacks t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
    monkeypatch.setenv("CONVZOO_DATA", str(partial))
    with pytest.raises(DataError) as e:
        source.find_data_dir()
    assert str(e.value).startswith(f"CONVZOO_DATA directory {partial} lacks t10k-images-idx3-ubyte[.gz], ")


def test_find_data_dir_nothing_found_message(tmp_path, no_data_env):
    with pytest.raises(DataError) as e:
        source.find_data_dir()
    assert str(e.value) == (
        f"Fashion-MNIST not found (looked in {tmp_path / 'cache' / 'convzoo' / 'fashion-mnist'}, "
        f"{tmp_path / 'no-debian'}); download it with `convzoo data fetch`, or install it with "
        "`apt-get install dataset-fashion-mnist`, or point CONVZOO_DATA at a directory holding the four IDX files"
    )


def test_find_data_dir_skips_an_incomplete_cache(monkeypatch, tmp_path, no_data_env):
    """A download cut short leaves the cache directory with some files: the search goes on to Debian's."""
    debian = make_dir(tmp_path / "debian")
    monkeypatch.setattr(source, "DEBIAN_DIR", debian)
    make_dir(cache_dir())
    (cache_dir() / "t10k-labels-idx1-ubyte.gz").unlink()
    assert source.find_data_dir() == debian


# ---------------------------------------------------------------------------------------------
# check and fetch


def test_check_reports_mismatch_without_raising():
    rows = source.check(SLICE)
    assert [r["file"] for r in rows] == NAMES
    assert not any(r["ok"] for r in rows)  # a slice is not the official file
    assert [r["count"] for r in rows] == [2000, 2000, 1000, 1000]
    assert rows[0]["sha256"] == slice_checksums()[NAMES[0]]
    assert [r["path"] for r in rows] == [str(SLICE / f"{name}.gz") for name in NAMES]


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


@pytest.mark.parametrize("junk", [b"junk", b"\x1f\x8b\x08 a truncated gzip stream"], ids=["not-gzip", "corrupt-gzip"])
def test_fetch_replaces_corrupt_existing_file(tmp_path, mirror, junk):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "train-labels-idx1-ubyte.gz").write_bytes(junk)
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


class Terminal(io.StringIO):
    """A stand-in for ``sys.stderr`` on a terminal: it says it is a tty and keeps what is written."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "progress, stderr, shown",
    [(None, Terminal, True), (True, Terminal, True), (False, Terminal, False), (True, io.StringIO, False)],
    ids=["default-terminal", "terminal", "no-progress", "not-a-terminal"],
)
def test_fetch_progress_bars_only_on_a_terminal(tmp_path, mirror, monkeypatch, progress, stderr, shown):
    err = stderr()
    monkeypatch.setattr(sys, "stderr", err)
    options = {} if progress is None else {"progress": progress}
    source.fetch(tmp_path / "dest", mirror=mirror, checksums=slice_checksums(), **options)
    out = err.getvalue()
    if not shown:
        assert out == ""
        return
    # One bar per file, named by the file, sized in binary kilobytes: 862787 B = 843k (1024-based),
    # 1032 B = 1.01k, 440030 B = 430k, 524 B; its rate in bytes (B/s). Each bar is cleared at the end.
    for name, size in zip(NAMES, ["843k", "1.01k", "430k", "524"], strict=True):
        assert f"\r{name}.gz:   0%|          | 0.00/{size} [00:00<?, ?B/s]\r" in out
    assert "\n" not in out and out.endswith(" \r")


class Response:
    """A fake HTTP response serving ``body`` at most ``piece`` bytes per read, as a socket does."""

    def __init__(self, body: bytes, headers: dict[str, str], piece: int) -> None:
        self.body, self.piece, self.reads = body, piece, []
        self.headers = email.message.Message()
        for key, value in headers.items():
            self.headers[key] = value

    def read(self, n: int) -> bytes:
        self.reads.append(n)
        chunk, self.body = self.body[: min(n, self.piece)], self.body[min(n, self.piece) :]
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@pytest.fixture
def server(monkeypatch):
    """``urlopen`` replaced by a server of the slice's files (by URL basename), sending 64 KiB per read at most.

    Set ``server.length`` to the Content-Length header to send (a function of the body; None: no header).
    Records ``server.calls`` (url, timeout) and the responses it gave.
    """

    class Server:
        length = staticmethod(lambda body: str(len(body)))
        calls: list[tuple[str, float]] = []
        responses: list[Response] = []

    def urlopen(url, timeout):
        Server.calls.append((url, timeout))
        body = (SLICE / url.rsplit("/", 1)[-1]).read_bytes()
        length = Server.length(body)
        response = Response(body, {} if length is None else {"Content-Length": length}, piece=1 << 16)
        Server.responses.append(response)
        return response

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return Server


@pytest.mark.parametrize(
    "length", [lambda body: str(len(body)), lambda body: None, lambda body: "unknown"],
    ids=["content-length", "no-length", "bad-length"],
)
def test_fetch_reads_in_1_mib_chunks_however_the_server_sends(tmp_path, server, length):
    """Reads ask for 1 MiB at a time (a body is never read whole into memory), a server that sends
    less per read is read until the end, and a missing or non-numeric Content-Length is no error."""
    server.length = staticmethod(length)
    dest = source.fetch(tmp_path / "dest", mirror="https://example.org/fmnist/", progress=False,
                        checksums=slice_checksums())
    for name in NAMES:
        assert (dest / f"{name}.gz").read_bytes() == (SLICE / f"{name}.gz").read_bytes()
    assert server.calls == [(f"https://example.org/fmnist/{name}.gz", 60) for name in NAMES]  # a 60 s timeout
    assert {n for r in server.responses for n in r.reads} == {1 << 20}


@pytest.mark.parametrize(
    "mirror, base",
    [
        ("https://example.org/fmnist", "https://example.org/fmnist"),
        ("https://example.org/fmnist//", "https://example.org/fmnist"),
        ("http://example.org/X/", "http://example.org/X"),  # only slashes are stripped
    ],
)
def test_fetch_urls_are_the_mirror_and_the_file_name(tmp_path, server, mirror, base):
    source.fetch(tmp_path / "dest", mirror=mirror, progress=False, checksums=slice_checksums())
    assert [url for url, _ in server.calls] == [f"{base}/{name}.gz" for name in NAMES]


def test_fetch_downloads_only_what_is_missing(tmp_path, server):
    dest = tmp_path / "dest"
    dest.mkdir()
    shutil.copy(SLICE / "train-images-idx3-ubyte.gz", dest)  # the first file, already there and valid
    source.fetch(dest, mirror="https://example.org", progress=False, checksums=slice_checksums())
    assert [url for url, _ in server.calls] == [f"https://example.org/{name}.gz" for name in NAMES[1:]]


def test_fetch_http_error_message(tmp_path, monkeypatch):
    def not_found(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", email.message.Message(), None)

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(DataError) as e:
        source.fetch(tmp_path / "dest", mirror="https://example.org", progress=False)
    assert str(e.value) == "download of https://example.org/train-images-idx3-ubyte.gz failed: HTTP 404 Not Found"


def test_fetch_default_destination_is_the_cache(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # its parents do not exist yet
    dest = source.fetch(mirror=mirror, progress=False, checksums=slice_checksums())
    assert dest == cache_dir() == tmp_path / "xdg" / "convzoo" / "fashion-mnist"
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)


def test_fetch_destination_that_is_a_file(tmp_path, mirror):
    dest = tmp_path / "dest"
    dest.write_bytes(b"")
    with pytest.raises(DataError) as e:
        source.fetch(dest, mirror=mirror, progress=False, checksums=slice_checksums())
    assert str(e.value) == f"cannot create download directory {dest}: File exists"


def test_fetch_where_md5_is_barred_for_security(tmp_path, mirror, monkeypatch):
    """Under FIPS, ``hashlib.md5`` refuses unless told the digest is not for security: fetch says so."""
    md5 = {name: hashlib.md5((SLICE / f"{name}.gz").read_bytes()).hexdigest() for name in NAMES}
    monkeypatch.setattr(source, "MD5_GZ", md5)
    real_md5 = hashlib.md5

    def fips_md5(*args, usedforsecurity=True):
        if usedforsecurity:
            raise ValueError("[digital envelope routines] unsupported")
        return real_md5(*args, usedforsecurity=False)

    monkeypatch.setattr(hashlib, "md5", fips_md5)
    dest = source.fetch(tmp_path / "dest", mirror=mirror, progress=False)
    assert len(list(dest.iterdir())) == 4


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


def test_classes_in_the_official_order():
    assert source.CLASSES == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )


# Read once from the files of Debian's dataset-fashion-mnist (the official release: its decompressed
# files have the SHA-256 sums of source.SHA256): per split, the first ten labels, then the pixel sum
# of the first image and the label and pixel sum of the last one. The first training image is an
# ankle boot (9), the first test image too. The committed slice is the first 2000 training and the
# first 1000 test examples of the same files, so it starts alike; its last examples are #1999 and #999.
FIRST_LABELS = {"train": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], "test": [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]}
FIRST_PIXEL_SUM = {"train": 76247, "test": 33456}
LAST = {"full": {"train": (5, 16684), "test": (5, 24390)}, "slice": {"train": (8, 49119), "test": (7, 28316)}}


def assert_known_examples(directory: Path, which: str) -> None:
    for split in ("train", "test"):
        images, labels = source.load_split(split, directory)
        assert labels[:10].tolist() == FIRST_LABELS[split]
        assert int(images[0].sum()) == FIRST_PIXEL_SUM[split]  # images and labels stay paired
        assert (int(labels[-1]), int(images[-1].sum())) == LAST[which][split]
    assert source.CLASSES[FIRST_LABELS["train"][0]] == "Ankle boot"


def test_slice_known_labels_and_pixels():
    assert_known_examples(SLICE, "slice")


@pytest.mark.skipif(not source.DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_full_data_set_known_labels_and_pixels():
    assert_known_examples(source.DEBIAN_DIR, "full")


def test_fetch_refuses_a_mirrors_gzip_bomb_without_inflating_it(tmp_path, mirror, monkeypatch):
    """A mirror's file whose gzip holds 256 MiB after a 1-image header: checked by the header-bounded reader,
    which stops 64 MiB past the declared length, so the check refuses it instead of inflating it whole."""
    member = gzip.compress(bytes(1 << 24), compresslevel=9)
    bomb = Path(mirror.removeprefix("file://")) / "t10k-labels-idx1-ubyte.gz"
    with open(bomb, "wb") as f:
        f.write(gzip.compress(idx((1,), b"\0")))
        for _ in range(16):
            f.write(member)
    produced = []
    real = idx_format._Gunzip._next
    monkeypatch.setattr(idx_format._Gunzip, "_next", lambda self, n: produced.append(out := real(self, n)) or out)
    with pytest.raises(DataError, match="does not match the expected checksum"):
        source.fetch(tmp_path / "dest", mirror=mirror, progress=False, checksums=slice_checksums())
    assert sum(map(len, produced)) < 80 << 20
    assert not (tmp_path / "dest" / "t10k-labels-idx1-ubyte.gz").exists()
