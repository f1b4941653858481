"""The file system's errors are the user's: disk full, read-only, wrong kinds of path.

Disk full and read-only run on a small tmpfs mounted for the test, which needs root (or
CAP_SYS_ADMIN); elsewhere those tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convzoo import checkpoint, fileio
from convzoo.data import idx
from convzoo.errors import FileSystemError

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
TINY = ["--batch-size", "32", "--limit-train", "64", "--limit-test", "32", "--data-dir", str(SLICE), "--device", "cpu"]

Cli = Callable[..., tuple[int, str, str]]


def mount_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 700 KiB file system: room for LeNet's config and checkpoints, not for the final files too."""
    yield from mount_tmpfs(tmp_path / "small", "700k")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "disk", "16m")


def one_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_a_full_disk_is_the_users_error_and_the_last_checkpoint_stays(small_disk: Path, run_cli: Cli) -> None:
    out = small_disk / "run"
    code, _, err = run_cli("train", "lenet", *TINY, "--epochs", "3", "--out", str(out))
    assert code == 2
    # This tiny run may also warn that it is at chance; the error is its one other line.
    one_error("".join(line for line in err.splitlines(keepends=True) if not line.startswith("warning: ")),
              "no space left on the device")
    epoch = checkpoint.saved_epoch(out / "checkpoint.safetensors")
    assert epoch is not None and epoch >= 1  # intact, and readable
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_a_read_only_file_system_is_the_users_error(disk: Path, run_cli: Cli) -> None:
    out = disk / "run"
    code, _, err = run_cli("train", "lenet", *TINY, "--epochs", "1", "--out", str(out))
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        code, _, err = run_cli("train", "--resume", str(out), "--epochs", "2")
        assert code == 2
        one_error(err, "read-only")
        code, _, err = run_cli("show", "kernels", str(out))
        assert code == 2
        one_error(err, "kernels.png", "read-only")
        code, _, err = run_cli("train", "lenet", *TINY, "--epochs", "1", "--out", str(disk / "other"))
        assert code == 2
        one_error(err, "read-only")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (disk / "other").exists()


def test_a_fifo_or_a_directory_is_never_replaced(tmp_path: Path, run_cli: Cli) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code, _, err = run_cli("show", "ops", "--out", str(fifo))
    assert code == 2
    one_error(err, "is not a regular file")
    assert fifo.exists() and not fifo.is_file()
    folder = tmp_path / "folder.png"
    folder.mkdir()
    (folder / "keep").write_text("x")
    code, _, err = run_cli("show", "ops", "--out", str(folder))
    assert code == 2
    one_error(err, "is a directory")
    assert (folder / "keep").read_text() == "x"


@pytest.fixture
def device_node(tmp_path: Path) -> Path:
    """A character device of the test's own (the null device's numbers, 1:3) in its temporary
    directory: the machine's /dev/null is never at stake, whatever the code under test does."""
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError as exc:
        pytest.skip(f"cannot make a device node here ({exc.strerror}; needs root or CAP_MKNOD)")
    return path


def test_a_device_node_is_never_replaced(device_node: Path, run_cli: Cli) -> None:
    code, _, err = run_cli("data", "show", "--out", str(device_node), "--data-dir", str(SLICE), "--count", "4")
    assert code == 2
    one_error(err, str(device_node), "is not a regular file")
    assert device_node.is_char_device()
    assert os.listdir(device_node.parent) == ["null"]  # no temporary file left beside it


def test_a_path_under_a_regular_file_is_the_users_error(tmp_path: Path, run_cli: Cli) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("show", "ops", "--out", str(tmp_path / "file" / "ops.png"))
    assert code == 2
    one_error(err, "not a directory")


def test_atomic_path_turns_os_errors_into_file_system_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileSystemError, match="a part of the path is a file"):
        fileio.write_text(tmp_path / "file" / "x.txt", "y")
    fileio.write_text(tmp_path / "ok.txt", "y")  # and a writable path still works
    assert (tmp_path / "ok.txt").read_text() == "y"


def test_an_unknown_os_error_stays_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise OSError(0, "something else")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError) as info:
        fileio.write_text(tmp_path / "x.txt", "y")
    assert not isinstance(info.value, FileSystemError)
    assert not list(tmp_path.iterdir())  # the temporary file is gone


def test_the_data_cache_on_a_full_disk_is_skipped(disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The raw-copy cache is best effort: a full cache directory costs speed, never the run."""
    from convzoo.data import load_split

    monkeypatch.setenv("XDG_CACHE_HOME", str(disk / "cache"))
    shutil.copytree(SLICE, disk / "data")
    monkeypatch.setattr(idx, "_SETTLED_NS", 0)  # cache files however new (copied a moment ago)
    with open(disk / "filler", "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    images, labels = load_split("train", disk / "data")
    assert len(images) == len(labels) > 0
    assert not list((disk / "cache").rglob("*-ubyte.*"))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 KiB file system: room for a run's config, not for LeNet's first checkpoint (AdamW keeps 3 copies)."""
    yield from mount_tmpfs(tmp_path / "tiny", "300k")


def test_a_full_disk_while_writing_weights_is_one_line_and_leaves_no_temporary_file(tiny_disk: Path,
                                                                                     run_cli: Cli) -> None:
    out = tiny_disk / "run"
    code, _, err = run_cli("train", "lenet", *TINY, "--optimizer", "adamw", "--epochs", "1", "--out", str(out))
    assert code == 2
    one_error("".join(line for line in err.splitlines(keepends=True) if not line.startswith("warning: ")),
              "no space left on the device", ".safetensors")
    assert not [p for p in tiny_disk.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def export_disk(tmp_path: Path) -> Iterator[Path]:
    """64 KiB: less than LeNet's TorchScript file (its weights alone are 240 KiB)."""
    yield from mount_tmpfs(tmp_path / "export", "64k")


def test_a_torchscript_export_to_a_full_disk_is_one_line_and_leaves_no_file(tiny_run: Path, export_disk: Path,
                                                                             run_cli: Cli) -> None:
    code, _, err = run_cli("export", str(tiny_run), "--format", "torchscript", "--out", str(export_disk / "model.pt"))
    assert code == 2
    one_error(err, "no space left on the device", "model.pt")
    assert list(export_disk.iterdir()) == []


def test_a_safetensors_writer_error_is_the_os_error_it_wraps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no tmpfs can be mounted: the disk fills up as the weights' bytes are written."""
    import errno

    from convzoo.models import create_model

    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(FileSystemError, match="model.safetensors: no space left on the device"):
        checkpoint.save_model(tmp_path / "model.safetensors", create_model("lenet"))
    assert list(tmp_path.iterdir()) == []


def test_the_sessions_repository_check_sees_a_new_file_but_not_the_tools_caches(tmp_path: Path) -> None:
    """``conftest.machine_untouched`` compares these listings before and after the session."""
    from conftest import repository_files

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "kept.py").write_text("")
    before = repository_files(tmp_path)
    assert before == {"src", "src/kept.py"}
    for cache in (".venv/lib/x.py", "src/__pycache__/kept.pyc", ".hypothesis/examples/1", "mutants/a/b.py",
                  "convzoo.egg-info/PKG-INFO", ".pytest_cache/v"):
        (tmp_path / cache).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / cache).write_text("")
    assert repository_files(tmp_path) == before
    (tmp_path / "runs" / "lenet").mkdir(parents=True)
    (tmp_path / "runs" / "lenet" / "result.json").write_text("{}")
    (tmp_path / "compare.html").write_text("")
    assert repository_files(tmp_path) - before == {"runs", "runs/lenet", "runs/lenet/result.json", "compare.html"}


def test_every_test_runs_in_an_empty_directory_of_its_own(tmp_path: Path) -> None:
    here = Path.cwd()
    assert not list(here.iterdir()) and here != tmp_path
    assert not here.resolve().is_relative_to(Path(__file__).resolve().parents[1])  # not in the repository
    import pwd

    assert Path(os.environ["HOME"]).resolve() != Path(pwd.getpwuid(os.getuid()).pw_dir).resolve()  # a private home
