"""convzoo.data.catalog: the published sets, fetched from a loopback HTTP server standing in for their sites."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from convzoo.data import NAMED, catalog, open_data
from convzoo.data.catalog import read_cifar10
from idx_files import idx

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


@pytest.fixture
def site(tmp_path):
    """A loopback HTTP server over ``tmp_path / "site"``; yields (directory, base URL)."""
    root = tmp_path / "site"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def publish_mnist_like(root: Path, monkeypatch, name: str = "mnist") -> None:
    """Four small IDX files on the site, their MD5s patched in as the publisher's."""
    files = {
        "train-images-idx3-ubyte.gz": idx((20, 28, 28)), "train-labels-idx1-ubyte.gz": idx((20,), bytes(range(10)) * 2),
        "t10k-images-idx3-ubyte.gz": idx((10, 28, 28)), "t10k-labels-idx1-ubyte.gz": idx((10,), bytes(range(10))),
    }
    md5s = {}
    for filename, content in files.items():
        packed = gzip.compress(content, mtime=0)
        (root / filename).write_bytes(packed)
        md5s[filename] = hashlib.md5(packed).hexdigest()
    monkeypatch.setitem(NAMED, name, catalog.Named(name, NAMED[name].classes, md5s, "unused", ""))


def cifar_archive(path: Path, n_per_batch: int = 10_000, extra: list[tuple[str, bytes]] = ()) -> Path:
    """A CIFAR-10 binary archive of the right layout: record i of each batch has label i % 10, pixels = label."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for member in catalog.CIFAR_MEMBERS:
            labels = np.arange(n_per_batch) % 10
            records = np.empty((n_per_batch, 3073), dtype=np.uint8)
            records[:, 0] = labels
            records[:, 1:] = labels[:, None]
            add(member, records.tobytes())
        add(catalog.CIFAR_META, b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n")
        for name, data in extra:
            add(name, data)
    return path


def test_fetch_mnist_from_a_mirror_then_open_it(site, tmp_path, monkeypatch, run_cli):
    root, url = site
    publish_mnist_like(root, monkeypatch)
    code, out, err = run_cli("data", "fetch", "mnist", "--mirror", url)
    assert code == 0 and "mnist is in" in out
    data = open_data("mnist", warn=None)
    assert data.classes == tuple("0123456789") and len(data.train_labels) == 20 and data.channels == 1
    code, out, _ = run_cli("data", "check", "--data", "mnist")
    assert code == 0 and out.count("ok ") == 4


def test_fetch_refuses_a_file_whose_md5_differs_and_keeps_nothing(site, tmp_path, monkeypatch, run_cli):
    root, url = site
    publish_mnist_like(root, monkeypatch, "kmnist")
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx((10, 28, 28), bytes(7840)), mtime=0))
    dest = tmp_path / "dest"
    code, _, err = run_cli("data", "fetch", "kmnist", "--mirror", url, "--dest", str(dest))
    assert code == 2 and err.count("\n") == 1 and "does not match its publisher's MD5" in err
    assert sorted(p.name for p in dest.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_fetch_without_a_network_is_one_line_and_leaves_nothing(tmp_path, run_cli):
    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run_cli("data", "fetch", "cifar10", "--mirror", f"http://127.0.0.1:{port}/", "--dest",
                           str(tmp_path / "d"))
    assert code == 2 and err.startswith("error: download of") and err.count("\n") == 1
    assert list((tmp_path / "d").iterdir()) == []


def test_cifar10_from_its_binary_archive(site, tmp_path, monkeypatch, run_cli):
    root, url = site
    archive = cifar_archive(root / "cifar-10-binary.tar.gz", extra=[("cifar-10-batches-py/data_batch_1", b"pickle!")])
    monkeypatch.setitem(NAMED, "cifar10", catalog.Named(
        "cifar10", NAMED["cifar10"].classes, {archive.name: hashlib.md5(archive.read_bytes()).hexdigest()}, url, ""))
    code, _, err = run_cli("data", "fetch", "cifar10")
    assert code == 0, err
    data = open_data("cifar10", warn=None)
    assert data.channels == 3 and data.size == 32
    assert len(data.train_labels) == 50_000 and len(data.test_labels) == 10_000
    assert data.classes[0] == "airplane" and bool((data.train_images[:, :, 0, 0] == data.train_labels[:, None]).all())
    gray = open_data("cifar10", warn=None, grayscale=True, size=16)
    assert gray.channels == 1 and gray.size == 16


@pytest.mark.parametrize("size", [100, 10_000 * 3073 + 1])
def test_cifar10_member_of_the_wrong_size_is_refused_before_reading(tmp_path, size):
    path = tmp_path / "c.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    with pytest.raises(catalog.DataError, match="not a file of the expected size"):
        read_cifar10(path)


def test_cifar10_archive_that_is_not_one(tmp_path):
    (tmp_path / "c.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(catalog.DataError, match="not a readable CIFAR-10 binary archive"):
        read_cifar10(tmp_path / "c.tar.gz")


def test_named_sets_list_their_publishers_checksums():
    assert set(NAMED) == {"fashion-mnist", "mnist", "kmnist", "cifar10"}
    assert NAMED["mnist"].files["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert NAMED["cifar10"].files == {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"}
    assert all(len(md5) == 32 for spec in NAMED.values() for md5 in spec.files.values())


def test_export_of_fashion_mnist(tmp_path, run_cli):
    code, out, err = run_cli("data", "export", "fashion-mnist", str(tmp_path / "t"), "--data-dir", str(SLICE))
    assert code == 0 and "2,000 training and 1,000 test" in out
    bags = int((open_data(data_dir=str(SLICE), warn=None).train_labels == 8).sum())
    assert len(list((tmp_path / "t" / "train" / "Bag").iterdir())) == bags
