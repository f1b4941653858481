"""The run directory: what convzoo may replace, the one-writer lock, reading damaged files, weights against config."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from convzoo import rundir
from convzoo.checkpoint import CheckpointError, save_model
from convzoo.errors import ConfigError, FileSystemError, RunBusyError, RunFileError
from convzoo.models import create_model

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
TINY = ["--epochs", "1", "--batch-size", "32", "--limit-train", "64", "--limit-test", "32", "--data-dir", str(SLICE),
        "--device", "cpu"]

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny LeNet run (copied by the tests that change it)."""
    from convzoo.cli import main

    out = tmp_path_factory.mktemp("runs") / "lenet"
    assert main(["train", "lenet", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def one_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_a_new_run_directory_has_its_marker_and_only_run_files(finished: Path) -> None:
    assert json.loads((finished / rundir.MARKER).read_text()) == {"format": rundir.MARKER_FORMAT}
    assert rundir.is_run_dir(finished) and rundir.foreign_entries(finished) == []
    assert {p.name for p in finished.iterdir()} <= rundir.RUN_FILES


def test_overwrite_refuses_a_directory_with_a_config_json_that_is_not_a_run(tmp_path: Path, run_cli: Cli) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text('{"format": "convzoo-1"}')
    (work / "notes.txt").write_text("mine")
    code, _, err = run_cli("train", "lenet", *TINY, "--out", str(work), "--overwrite")
    assert code == 2
    one_error(err, "refusing to overwrite", "did not write")
    assert sorted(p.name for p in work.iterdir()) == ["config.json", "notes.txt"]


def test_overwrite_refuses_a_run_directory_holding_a_file_of_the_users(run: Path, run_cli: Cli) -> None:
    (run / "notes.txt").write_text("mine")
    before = sorted(p.name for p in run.iterdir())
    code, _, err = run_cli("train", "lenet", *TINY, "--out", str(run), "--overwrite")
    assert code == 2
    one_error(err, "notes.txt", "move them or choose another --out")
    assert sorted(p.name for p in run.iterdir()) == before


def test_overwrite_replaces_a_run_of_an_older_convzoo_without_a_marker(run: Path, run_cli: Cli) -> None:
    (run / rundir.MARKER).unlink()
    (run / rundir.LOCK).unlink(missing_ok=True)
    assert rundir.is_run_dir(run)
    code, _, err = run_cli("train", "lenet", *TINY, "--seed", "3", "--out", str(run), "--overwrite")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["config"]["seed"] == 3 and (run / rundir.MARKER).is_file()


def test_a_run_of_an_older_convzoo_still_evaluates_and_resumes(run: Path, run_cli: Cli) -> None:
    (run / rundir.MARKER).unlink()
    (run / rundir.LOCK).unlink(missing_ok=True)
    code, out, err = run_cli("eval", str(run), "--device", "cpu")
    assert code == 0 and "test accuracy" in out, err
    code, out, err = run_cli("train", "--resume", str(run), "--epochs", "2")
    assert code == 0 and "after 2 epochs" in out, err


def test_a_run_holding_the_lock_refuses_a_second_writer_but_not_readers(run: Path, run_cli: Cli) -> None:
    lock = rundir.RunLock(run)
    lock.acquire()
    try:
        for argv in (["train", "--resume", str(run), "--epochs", "2"],
                     ["train", "lenet", *TINY, "--out", str(run), "--overwrite"]):
            code, _, err = run_cli(*argv)
            assert code == 2
            one_error(err, f"is in use by process {os.getpid()}")
        code, out, err = run_cli("eval", str(run), "--device", "cpu")
        assert code == 0 and "test accuracy" in out, err
        code, out, err = run_cli("show", "kernels", str(run))
        assert code == 0 and out.strip() == f"wrote {run / 'kernels.png'}", err
        assert (run / "kernels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        lock.release()
    code, out, err = run_cli("train", "--resume", str(run), "--epochs", "2")
    assert code == 0 and "after 2 epochs" in out, err


@pytest.mark.slow  # seconds: a process of its own
def test_the_lock_is_released_when_its_process_dies(run: Path) -> None:
    """A lock taken by a process that is killed is free again: the kernel drops it with the process."""
    code = ("import os, sys; from pathlib import Path; from convzoo.rundir import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(run)], check=True, timeout=60)
    lock = rundir.RunLock(run)
    lock.acquire()
    lock.release()


def test_two_locks_on_one_directory_conflict(run: Path) -> None:
    first, second = rundir.RunLock(run), rundir.RunLock(run)
    first.acquire()
    with pytest.raises(RunBusyError, match=str(os.getpid())):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_resume_removes_temporary_files_a_killed_process_left(run: Path, run_cli: Cli) -> None:
    stale = [run / ".checkpoint.safetensors.0123abcd.tmp.safetensors", run / ".metrics.jsonl.89abcdef.tmp.jsonl"]
    for path in stale:
        path.write_bytes(b"half")
    code, out, err = run_cli("train", "--resume", str(run), "--epochs", "2")
    assert code == 0 and "after 2 epochs" in out, err
    assert not any(path.exists() for path in stale)
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("name, expected", [(".model.safetensors.0123abcd.tmp.safetensors", True),
                                            (".report.html.deadbeef.tmp.html", True),
                                            ("model.safetensors", False), (".model.safetensors.tmp", False),
                                            (".notes.0123abcd.tmpx", False)])
def test_temporary_names_are_those_of_atomic_path(name: str, expected: bool) -> None:
    assert rundir.is_temporary(name) is expected


def test_a_run_that_fails_before_its_first_epoch_leaves_no_directory(tmp_path: Path, run_cli: Cli) -> None:
    out = tmp_path / "nan"
    code, _, err = run_cli("train", "lenet", *TINY, "--lr", "1e38", "--out", str(out))
    assert code == 3
    one_error(err, "no epoch was completed, so nothing was kept")
    assert not out.exists()


def test_a_start_that_failed_does_not_block_the_next_attempt(tmp_path: Path, run_cli: Cli) -> None:
    """A run directory with a config but no completed epoch (left by an older convzoo) is reused."""
    out = tmp_path / "stub"
    out.mkdir()
    model = create_model("lenet")
    from convzoo.config import recipe
    from convzoo.runtime import resolve_device

    rundir.write_config(out, recipe("lenet"), model, resolve_device("cpu"), "convzoo train lenet")
    code, _, err = run_cli("train", "lenet", *TINY, "--out", str(out))
    assert code == 0, err
    assert (out / rundir.MARKER).is_file() and json.loads((out / "result.json").read_text())["epochs"] == 1


def test_out_under_a_regular_file_is_refused_before_any_work(tmp_path: Path, run_cli: Cli) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("train", "lenet", *TINY, "--out", str(tmp_path / "file" / "run"))
    assert code == 2
    one_error(err, "is a file, not a directory")


def test_weights_of_another_run_are_refused(run: Path, run_cli: Cli) -> None:
    save_model(run / "model.safetensors", create_model("lenet_bn"))
    code, _, err = run_cli("eval", str(run), "--device", "cpu")
    assert code == 2
    one_error(err, "holds a lenet_bn", "describes a lenet", "different runs")


def test_weights_for_another_input_size_are_refused(run: Path) -> None:
    save_model(run / "model.safetensors", create_model("lenet", input_size=32))
    with pytest.raises(CheckpointError, match="for 32x32 inputs"):
        rundir.load_run(run, "cpu")


def _with_key(text: str, key: str, value: object) -> str:
    """config.json's text with its top-level ``key`` set to ``value`` (a hand edit)."""
    return json.dumps({**json.loads(text), key: value})


@pytest.fixture
def edited(run: Path) -> Iterator[Callable[[str, Callable[[str], str]], Path]]:
    def edit(name: str, change: Callable[[str], str]) -> Path:
        path = run / name
        path.write_text(change(path.read_text()))
        return run

    yield edit


@pytest.mark.parametrize("name, change, command, message", [
    ("metrics.jsonl", lambda t: t.replace('"train_loss"', '"loss"'), "report", "line 1 is not a row of metrics"),
    ("metrics.jsonl", lambda t: "[1, 2]\n", "report", "no number for epoch"),
    ("result.json", lambda t: "{}", "compare", "no number for test_acc"),
    ("result.json", lambda t: '{"test_acc": "high", "train_seconds": 1, "epochs": 1}', "compare",
     "no number for test_acc"),
    ("config.json", lambda t: t.replace('"model": {', '"modelx": {'), "eval", "no model description"),
    ("config.json", lambda t: t.replace('"epochs": 1', '"epochs": "1"'), "eval", "epochs must be an integer"),
    ("config.json", lambda t: t.replace('"config": {', '"config": {"colour": "red", '), "eval",
     "invalid training configuration"),
    ("config.json", lambda t: t.replace('"seed": 0', '"seed": 1' + "0" * 5000), "eval",
     "config.json is not valid JSON"),
    ("metrics.jsonl", lambda t: t.replace('"epoch": 1', '"epoch": 1' + "0" * 5000), "report",
     "metrics.jsonl is not valid JSON lines"),
    ("result.json", lambda t: t.replace('"epochs": 1', '"epochs": 1' + "0" * 5000), "compare",
     "result.json is not valid JSON"),
    ("config.json", lambda t: _with_key(t, "versions", ["2.13.0"]), "report", "config.json has values of the wrong "
     "type for versions"),
    ("config.json", lambda t: _with_key(t, "versions", ["2.13.0"]), "eval", "config.json has values of the wrong "
     "type for versions"),
    ("config.json", lambda t: _with_key(t, "command", 7), "report", "config.json has values of the wrong type for "
     "command"),
    ("config.json", lambda t: _with_key(t, "command", 7), "eval", "config.json has values of the wrong type for "
     "command"),
])
def test_hand_edited_run_files_give_one_clear_error(edited, run_cli: Cli, name: str, change, command: str,
                                                    message: str) -> None:
    run = edited(name, change)
    argv = {"report": ["report", str(run), "--device", "cpu"], "compare": ["compare", str(run), "--out",
                                                                            str(run.parent / "c.html")],
            "eval": ["eval", str(run), "--device", "cpu"]}[command]
    code, _, err = run_cli(*argv)
    assert code == 2
    one_error(err, message)


def test_resume_with_a_damaged_config_is_refused(edited, run_cli: Cli) -> None:
    run = edited("config.json", lambda t: t.replace('"model": {', '"modelx": {'))
    code, _, err = run_cli("train", "--resume", str(run), "--epochs", "2")
    assert code == 2
    one_error(err, "no model description")


def test_resume_with_versions_of_the_wrong_type_is_refused_before_training(edited, run_cli: Cli) -> None:
    """Issue 23: a ``versions`` list in config.json crashed ``--resume`` only after the remaining epochs."""
    run = edited("config.json", lambda t: _with_key(t, "versions", ["2.13.0"]))
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    code, out, err = run_cli("train", "--resume", str(run), "--epochs", "2")
    assert code == 2 and "epoch" not in out
    one_error(err, "config.json has values of the wrong type for versions")
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


@pytest.mark.parametrize("argv, flag", [(["train", "lenet", *TINY, "--out", ""], "--out"),
                                        (["train", "lenet", *TINY, "--out", "  "], "--out"),
                                        (["train", "--resume", ""], "--resume"),
                                        (["train", "--resume", " "], "--resume")])
def test_an_empty_run_directory_is_refused(tmp_path: Path, run_cli: Cli, argv: list[str], flag: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: ``--out ''`` meant the working directory, ``--resume ''`` too; both are one line now."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    one_error(err, f"error: {flag} must not be empty")
    assert list(tmp_path.iterdir()) == []


# --- two writers at once, and the commands that write into a finished run ------------------------------------------

ROUNDS = 20


def _writer(base: str, name: str, barrier, results) -> None:  # noqa: ANN001 (multiprocessing's proxies)
    """One of two processes starting the same new run, ``ROUNDS`` times; puts ``(round, name, outcome)``.

    The winner writes a checkpoint (a run with a completed epoch) and holds the directory until the other
    process has tried; the other must fail without touching what the winner has.
    """
    for i in range(ROUNDS):
        path = Path(base) / f"run{i}"
        barrier.wait(timeout=60)  # released together
        outcome, waited = "won", False
        try:
            with rundir.RunDirectory(path) as directory:
                directory.check(False)
                directory.create(False)
                (path / rundir.CHECKPOINT).write_text(name)
                waited = True
                barrier.wait(timeout=60)  # the other one tries while this one holds the directory
        except RunBusyError:
            outcome = "busy"
        except ConfigError:
            outcome = "exists"
        except Exception as exc:  # anything else fails the test with its name, not a hang
            outcome = repr(exc)
        if not waited:
            barrier.wait(timeout=60)
        results.put((i, name, outcome))


@pytest.mark.slow  # seconds; its spawned writers would import mutmut's copy of convzoo without its settings
def test_two_writers_on_one_new_directory_exactly_one_wins(tmp_path: Path) -> None:
    """Issue 23: two processes creating one new run directory, released together, 20 times: exactly one wins each
    round, the other is refused (busy, or the run exists), and the winner's marker and files are all there."""
    context = multiprocessing.get_context("spawn")  # a fork of this process (threads of torch) could hang
    barrier, results = context.Barrier(2), context.Queue()
    writers = [context.Process(target=_writer, args=(str(tmp_path), name, barrier, results)) for name in "ab"]
    for writer in writers:
        writer.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * ROUNDS)]
    for writer in writers:
        writer.join(timeout=60)
        assert writer.exitcode == 0
    for i in range(ROUNDS):
        got = {name: outcome for round_, name, outcome in outcomes if round_ == i}
        winners = [name for name, outcome in got.items() if outcome == "won"]
        assert len(winners) == 1 and set(got.values()) - {"won"} <= {"busy", "exists"}, (i, got)
        path = tmp_path / f"run{i}"
        assert (path / rundir.MARKER).is_file() and (path / rundir.CHECKPOINT).read_text() == winners[0]
        assert sorted(entry.name for entry in path.iterdir()) == [rundir.MARKER, rundir.CHECKPOINT]


def test_report_sweeps_the_temporary_files_a_killed_writer_left(run: Path, run_cli: Cli) -> None:
    """Issue 23: what a killed ``report`` or ``export`` left was never swept; a command writing into the run does."""
    stale = [run / ".report.html.1a2b3c4d.tmp.html", run / ".model.onnx.0123abcd.tmp.onnx"]
    for path in stale:
        path.write_bytes(b"half")
    code, out, err = run_cli("report", str(run), "--device", "cpu")
    assert code == 0 and out.strip() == f"wrote {run / 'report.html'}", err
    assert not any(path.exists() for path in stale)


@pytest.mark.slow  # seconds: a process of its own
def test_report_on_a_run_another_process_holds_is_refused_naming_it(run: Path) -> None:
    lock = rundir.RunLock(run)
    lock.acquire()
    try:
        before = {path.name: path.read_bytes() for path in run.iterdir() if path.name != rundir.LOCK}
        done = subprocess.run([sys.executable, "-m", "convzoo", "report", str(run), "--device", "cpu"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and done.stdout == ""
        one_error(done.stderr, f"is in use by process {os.getpid()}")
        assert {path.name: path.read_bytes() for path in run.iterdir() if path.name != rundir.LOCK} == before
    finally:
        lock.release()


def test_check_run_dir_names_what_it_refuses(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    with pytest.raises(ConfigError, match="not a convzoo run directory"):
        rundir.check_run_dir(tmp_path / "a")
    rundir.check_run_dir(tmp_path / "new")  # a new path is fine
    (tmp_path / "b").mkdir()
    rundir.check_run_dir(tmp_path / "b")  # and an empty directory


# --- each file's writer and reader, on files written by hand (no training) ------------------------------------------

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"  # config.json's "created": UTC, to the second


@pytest.fixture
def configured(tmp_path: Path) -> Path:
    """A directory holding only a LeNet run's config.json, written as a new run writes it."""
    from convzoo.config import recipe

    out = tmp_path / "run"
    out.mkdir()
    rundir.write_config(out, recipe("lenet"), create_model("lenet"), torch.device("cpu"), "convzoo train lenet")
    return out


def _edit_config(run: Path, **keys: object) -> Path:
    """config.json with its top-level ``keys`` set (a value ``...`` removes the key)."""
    meta = json.loads((run / "config.json").read_text())
    meta.update(keys)
    meta = {key: value for key, value in meta.items() if value is not ...}
    (run / "config.json").write_text(json.dumps(meta))
    return run / "config.json"


def test_write_config_records_the_run(configured: Path) -> None:
    from convzoo.runtime import versions

    meta = json.loads((configured / "config.json").read_text())
    assert list(meta) == ["format", "config", "model", "data", "versions", "device", "device_name", "command",
                          "created"]
    assert meta["format"] == "convzoo-1" and meta["config"]["model"] == "lenet" and meta["config"]["lr"] == 0.9
    assert meta["model"]["name"] == "lenet" and meta["versions"] == versions()
    assert meta["data"] == {"data": "fashion-mnist", "classes": FASHION, "channels": 1, "size": 28,
                            "split": {"rule": "official"}}
    assert meta["device"] == "cpu" and meta["device_name"] and meta["command"] == "convzoo train lenet"
    assert re.fullmatch(STAMP, meta["created"]), meta["created"]
    assert (configured / "config.json").read_text().startswith('{\n  "format": "convzoo-1",\n')


def test_write_config_keeps_the_data_given_and_the_command_line_by_default(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo.config import recipe

    monkeypatch.setattr(sys, "argv", ["convzoo", "train", "lenet"])
    data = {"data": "/photos", "classes": ["cat", "dog"], "channels": 3, "size": 32, "split": {"rule": "folders"}}
    rundir.write_config(tmp_path, recipe("lenet"), create_model("lenet", num_classes=2, in_channels=3),
                        torch.device("cpu"), None, data)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["data"] == data and meta["command"] == "convzoo train lenet"
    assert rundir.run_classes(rundir.read_run_config(tmp_path)) == ("cat", "dog")


def test_update_config_writes_only_a_changed_config(configured: Path) -> None:
    from dataclasses import replace

    path = configured / "config.json"
    config = rundir.read_run_config(configured)["config"]
    before = path.stat().st_ino
    rundir.update_config(configured, config)
    assert path.stat().st_ino == before  # the same config: the file is not rewritten
    created = json.loads(path.read_text())["created"]
    rundir.update_config(configured, replace(config, epochs=7, lr=0.05))
    meta = json.loads(path.read_text())
    assert meta["config"]["epochs"] == 7 and meta["config"]["lr"] == 0.05 and meta["created"] == created
    assert rundir.read_run_config(configured)["config"] == replace(config, epochs=7, lr=0.05)


def test_read_run_config_fills_in_the_data_of_an_older_run(configured: Path) -> None:
    # an older run's model description may lack its classes and channels: Fashion-MNIST's ten, gray
    _edit_config(configured, data=..., versions=..., device=..., model={"name": "lenet"})
    meta = rundir.read_run_config(str(configured))
    assert meta["data"]["classes"] == FASHION and rundir.run_classes(meta) == tuple(FASHION)


def test_read_run_config_refuses_what_is_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(CheckpointError, match="pickle"):
        rundir.read_run_config(tmp_path / "weights.pt")
    (tmp_path / "notes.txt").write_text("notes")
    with pytest.raises(RunFileError) as error:
        rundir.read_run_config(tmp_path / "notes.txt")
    assert str(error.value) == (f"{tmp_path / 'notes.txt'} is a file; give the run directory that holds config.json "
                                "and model.safetensors")
    with pytest.raises(RunFileError) as error:
        rundir.read_run_config(tmp_path)
    assert str(error.value) == f"{tmp_path} is not a convzoo run directory (no config.json)"
    for text in ("{", b"\xff\xfe{}", "[" * 100_000):
        (tmp_path / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(RunFileError) as error:
            rundir.read_run_config(tmp_path)
        assert str(error.value) == f"{tmp_path / 'config.json'} is not valid JSON"


@pytest.mark.parametrize("text, found", [('{"format": "convzoo-0"}', "'convzoo-0'"), ("{}", "None"),
                                         ('["convzoo-1"]', "None"), ('{"format": 1}', "1")])
def test_read_run_config_names_the_format_it_found(tmp_path: Path, text: str, found: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunFileError) as error:
        rundir.read_run_config(tmp_path)
    assert str(error.value) == f"{tmp_path / 'config.json'} is of format {found}, this convzoo reads 'convzoo-1'"


@pytest.mark.parametrize("model", [..., ["lenet"], {"name": "alexnet"}, {"nam": "lenet"}])
def test_read_run_config_refuses_a_model_other_than_its_configuration(configured: Path, model: object) -> None:
    path = _edit_config(configured, model=model)
    with pytest.raises(RunFileError) as error:
        rundir.read_run_config(configured)
    assert str(error.value) == (f"{path} has no model description matching its configuration (lenet); the file was "
                                "edited or damaged")


GOOD_DATA = {"data": "fashion-mnist", "classes": FASHION, "channels": 1, "size": 28, "split": {"rule": "official"}}


@pytest.mark.parametrize("keys, bad", [
    ({"device": 1}, "device"), ({"device_name": None}, "device_name"), ({"command": ["convzoo"]}, "command"),
    ({"created": 2026}, "created"), ({"device": 0, "created": 0}, "device, created"),
    ({"versions": ["2.13.0"]}, "versions"), ({"versions": {"torch": 2}}, "versions"),
    ({"data": FASHION}, "data"), ({"data": {**GOOD_DATA, "classes": "0123456789"}}, "data"),
    ({"data": {**GOOD_DATA, "classes": FASHION[:9]}}, "data"), ({"data": {**GOOD_DATA, "classes": [*FASHION, "x"]}},
                                                                "data"),
    ({"data": {**GOOD_DATA, "classes": [*FASHION[:9], 9]}}, "data"), ({"data": {**GOOD_DATA, "channels": 3}}, "data"),
    ({"data": {**GOOD_DATA, "channels": 2}}, "data"), ({"data": {**GOOD_DATA, "channels": ...}}, "data"),
    ({"data": {**GOOD_DATA, "size": 0}}, "data"), ({"data": {**GOOD_DATA, "size": True}}, "data"),
    ({"data": {**GOOD_DATA, "size": "28"}}, "data"), ({"data": {k: v for k, v in GOOD_DATA.items() if k != "size"}},
                                                       "data"),
    ({"device": 1, "data": {}, "versions": 3}, "device, data, versions"),
])
def test_read_run_config_names_every_key_of_the_wrong_type(configured: Path, keys: dict, bad: str) -> None:
    keys = {key: ({k: v for k, v in value.items() if v is not ...} if isinstance(value, dict) else value)
            for key, value in keys.items()}
    path = _edit_config(configured, **keys)
    with pytest.raises(RunFileError) as error:
        rundir.read_run_config(configured)
    assert str(error.value) == f"{path} has values of the wrong type for {bad}; the file was edited or damaged"


def test_read_run_config_takes_every_well_formed_data(tmp_path: Path) -> None:
    from convzoo.config import recipe

    for classes, channels, size in ((2, 3, 1), (2, 1, 32), (3, 3, 64)):
        data = {"data": "/x", "classes": [f"c{i}" for i in range(classes)], "channels": channels, "size": size}
        rundir.write_config(tmp_path, recipe("lenet"), create_model("lenet", num_classes=classes,
                                                                    in_channels=channels), torch.device("cpu"), "c",
                            data)
        assert rundir.read_run_config(tmp_path)["data"] == data
    one_class = {"data": "/x", "classes": ["only"], "channels": 1, "size": 28}
    rundir.write_config(tmp_path, recipe("lenet"), create_model("lenet", num_classes=1), torch.device("cpu"), "c",
                        one_class)
    with pytest.raises(RunFileError, match="wrong type for data"):
        rundir.read_run_config(tmp_path)


@pytest.mark.parametrize("name, expected", [(".x.0123abcd.tmp", True), (".a.b.89abcdef.tmp.tar2", True),
                                            ("x.0123abcd.tmp", False), (".0123abcd.tmp", False),
                                            (".x.0123ABCD.tmp", False), (".x.0123abc.tmp", False),
                                            (".x.0123abcde.tmp", False), (".x.0123abcg.tmp", False),
                                            (".x.0123abcd.tmp.", False), (".x.0123abcd.tmp.a-b", False),
                                            (".x.0123abcd.tmpl", False), ("a.x.0123abcd.tmp", False),
                                            (".x.0123abcd.tmp.json\n", False), (".x.0123abcd-tmp", False)])
def test_temporary_names_are_exactly_those_of_atomic_path(name: str, expected: bool) -> None:
    assert rundir.is_temporary(name) is expected


def test_what_a_run_directory_holds_that_convzoo_did_not_write(tmp_path: Path) -> None:
    for name in ("config.json", "report.html", "model.onnx", "features.png", ".model.safetensors.0123abcd.tmp.st"):
        (tmp_path / name).write_text("x")
    assert rundir.foreign_entries(tmp_path) == []
    (tmp_path / "result.json").symlink_to(tmp_path / "config.json")
    (tmp_path / "curves.png").mkdir()
    (tmp_path / "zeta.txt").write_text("mine")
    (tmp_path / "alpha").mkdir()
    assert rundir.foreign_entries(tmp_path) == ["alpha", "curves.png", "result.json", "zeta.txt"]


def test_is_run_dir_needs_the_marker_or_a_config_of_this_format_among_run_files_only(configured: Path) -> None:
    assert rundir.is_run_dir(configured) and rundir.is_run_dir(str(configured))
    (configured / "notes.txt").write_text("mine")
    assert not rundir.is_run_dir(configured)
    (configured / rundir.MARKER).mkdir()  # a marker must be a file
    assert not rundir.is_run_dir(configured)
    (configured / rundir.MARKER).rmdir()
    (configured / rundir.MARKER).write_text("{}")
    assert rundir.is_run_dir(configured)
    (configured / rundir.MARKER).unlink()
    (configured / "notes.txt").unlink()
    for text in ('{"format": "convzoo-0"}', '["convzoo-1"]', "{", b"\xff"):
        (configured / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        assert not rundir.is_run_dir(configured), text
    (configured / "config.json").unlink()
    (configured / "config.json").mkdir()
    assert not rundir.is_run_dir(configured)
    assert not rundir.is_run_dir(configured / "missing")


def _refusal(run_dir: Path, overwrite: bool = False) -> str:
    with pytest.raises(ConfigError) as error:
        if overwrite:
            rundir.check_run_dir(run_dir, overwrite)
        else:
            rundir.check_run_dir(run_dir)  # without overwrite by default
    assert error.value.field == "out"
    return str(error.value)


def test_check_run_dir_refuses_what_it_may_not_use_or_replace_in_so_many_words(configured: Path,
                                                                               tmp_path: Path) -> None:
    assert _refusal(Path("/")) == "/ already exists and it is not a convzoo run directory; choose another --out"
    (tmp_path / "file").write_text("x")
    assert _refusal(tmp_path / "file") == f"--out {tmp_path / 'file'} exists and is not a directory"
    assert _refusal(tmp_path / "file" / "a" / "b") == (f"--out {tmp_path / 'file' / 'a' / 'b'}: {tmp_path / 'file'} "
                                                       "is a file, not a directory; choose another --out")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x").write_text("1")
    assert _refusal(mine) == f"{mine} already exists and it is not a convzoo run directory; choose another --out"
    assert _refusal(mine, True) == f"refusing to overwrite {mine}: it is not a convzoo run directory"
    (mine / "config.json").write_text("{}")
    assert _refusal(mine) == f"{mine} already exists and it holds files convzoo did not write; choose another --out"
    assert _refusal(mine, True) == f"refusing to overwrite {mine}: it holds files convzoo did not write"
    rundir.check_run_dir(configured)  # a run that never completed an epoch is reused
    rundir.check_run_dir(configured, True)
    (configured / rundir.MARKER).write_text("{}")
    for i, name in enumerate(("f", "e", "d", "c", "b")):
        (configured / name).write_text(str(i))
        listed = ", ".join(sorted(("f", "e", "d", "c", "b")[:i + 1]))
        assert _refusal(configured) == (f"refusing to use {configured}: it holds files convzoo did not write ({listed})"
                                        "; move them or choose another --out")
    (configured / "a").write_text("6")
    assert _refusal(configured, True) == (f"refusing to overwrite {configured}: it holds files convzoo did not write "
                                          "(a, b, c, d, e, ...); move them or choose another --out")
    for name in "abcdef":
        (configured / name).unlink()
    for name in (rundir.CHECKPOINT, rundir.MODEL):
        (configured / name).write_text("weights")
        assert _refusal(configured) == (f"{configured} already exists; use --resume {configured} to continue it, "
                                        "--overwrite to replace it, or another --out")
        rundir.check_run_dir(configured, overwrite=True)
        (configured / name).unlink()


def test_check_run_dir_takes_a_new_path_or_a_directory_holding_only_its_lock(tmp_path: Path) -> None:
    rundir.check_run_dir(tmp_path / "new" / "deeper")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / rundir.LOCK).write_text("1\n")
    rundir.check_run_dir(tmp_path / "locked")
    (tmp_path / "locked" / rundir.MARKER).write_text("{}")  # a marker alone: a run that has not started
    rundir.check_run_dir(tmp_path / "locked")


def test_check_output_refuses_to_replace_a_run_file(configured: Path, tmp_path: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors", "result.json",
                 rundir.MARKER, rundir.LOCK):
        with pytest.raises(ConfigError) as error:
            rundir.check_output(configured / name, "kernels")
        assert str(error.value) == (f"--kernels {configured / name} would replace the run's own {name}; choose "
                                    "another --kernels") and error.value.field == "kernels"
    with pytest.raises(ConfigError, match="^--out "):
        rundir.check_output(str(configured / "config.json"))
    assert rundir.check_output(str(configured / "report.html")) == configured / "report.html"
    assert rundir.check_output(tmp_path / "config.json") == tmp_path / "config.json"  # not a run directory


def test_run_label_is_the_name_of_the_resolved_directory(tmp_path: Path, own_cwd: Path) -> None:
    assert rundir.run_label(tmp_path / "runs" / "lenet") == "lenet"
    assert rundir.run_label(".") == own_cwd.name and rundir.run_label(tmp_path / "a" / "..") == tmp_path.name


def _row(epoch: int = 1, **score: object) -> dict:
    """A metrics.jsonl row (``score``: its test_acc or val_acc, default test_acc=0.5)."""
    return {"epoch": epoch, "train_loss": 0.5, "train_acc": 0.75, **(score or {"test_acc": 0.5}), "lr": 0.1,
            "seconds": 2.0, "eval_seconds": 0.25}


def test_metrics_are_one_json_object_a_line_written_unless_equal(tmp_path: Path) -> None:
    rows = [_row(1), _row(2, val_acc=0.625)]
    assert rundir.metrics_text([]) == "" and rundir.metrics_text([{"a": 1}, {"b": [2]}]) == '{"a": 1}\n{"b": [2]}\n'
    rundir.write_metrics(tmp_path, rows)
    path = tmp_path / "metrics.jsonl"
    assert path.read_text() == "".join(json.dumps(row) + "\n" for row in rows)
    assert rundir.read_metrics(tmp_path) == rows and rundir.read_metrics(str(tmp_path)) == rows
    inode = path.stat().st_ino
    rundir.write_metrics(tmp_path, rows, unless_equal=True)
    assert path.stat().st_ino == inode  # the same rows: not written again
    rundir.write_metrics(tmp_path, rows)
    assert path.stat().st_ino != inode
    inode = path.stat().st_ino
    rundir.write_metrics(tmp_path, rows[:1], unless_equal=True)
    assert path.stat().st_ino != inode and rundir.read_metrics(tmp_path) == rows[:1]
    path.unlink()
    rundir.write_metrics(tmp_path, rows, unless_equal=True)
    assert rundir.read_metrics(tmp_path) == rows


def test_read_metrics_skips_blank_lines_and_takes_rows_without_eval_seconds(tmp_path: Path) -> None:
    old = {key: value for key, value in _row().items() if key != "eval_seconds"}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(old) + "\n\n  \n" + json.dumps(_row(2, val_acc=1)) + "\n")
    assert rundir.read_metrics(tmp_path) == [old, _row(2, val_acc=1)]


@pytest.mark.parametrize("rows, message", [
    ([{}], "line 1 is not a row of metrics (no number for epoch, train_loss, train_acc, seconds, test_acc or val_acc)"),
    ([_row(), [1]], "line 2 is not a row of metrics (no number for epoch, train_loss, train_acc, seconds, test_acc or "
                    "val_acc)"),
    ([_row(), _row(2), {**_row(3), "epoch": True}], "line 3 is not a row of metrics (no number for epoch)"),
    ([{**_row(), "train_loss": "0.5"}], "line 1 is not a row of metrics (no number for train_loss)"),
    ([{**_row(), "train_acc": None}], "line 1 is not a row of metrics (no number for train_acc)"),
    ([{**_row(), "seconds": float("inf")}], "line 1 is not a row of metrics (no number for seconds)"),
    ([_row(test_acc=float("nan"))], "line 1 is not a row of metrics (no number for test_acc or val_acc)"),
    ([_row(test_acc=0.5, val_acc=0.5)], "line 1 is not a row of metrics (no number for test_acc or val_acc)"),
    ([_row(val_acc=False)], "line 1 is not a row of metrics (no number for test_acc or val_acc)"),
])
def test_read_metrics_names_the_line_and_what_it_lacks(tmp_path: Path, rows: list, message: str) -> None:
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(RunFileError) as error:
        rundir.read_metrics(tmp_path)
    assert str(error.value) == f"{tmp_path / 'metrics.jsonl'}: {message}; the file was edited or damaged"


def test_read_metrics_refuses_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileError) as error:
        rundir.read_metrics(tmp_path)
    assert str(error.value) == (f"{tmp_path} has no metrics.jsonl (not a convzoo run directory, or no epoch "
                                "completed)")
    (tmp_path / "metrics.jsonl").write_text(json.dumps(_row()) + "\n{\n")
    with pytest.raises(RunFileError) as error:
        rundir.read_metrics(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'metrics.jsonl'} is not valid JSON lines (Expecting property name "
                                "enclosed in double quotes: line 1 column 2 (char 1))")


def test_a_runs_time_is_its_training_and_evaluation_seconds() -> None:
    old = {key: value for key, value in _row().items() if key != "eval_seconds"}
    assert rundir.train_seconds([_row(1), old, {**_row(3), "seconds": 0.5, "eval_seconds": 0.125}]) == 4.875
    assert rundir.train_seconds([]) == 0


def test_run_histories_label_each_run_and_prime_a_repeated_name(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="^no run directory given$"):
        rundir.run_histories([])
    dirs = [tmp_path / "a" / "lenet", tmp_path / "b" / "lenet", tmp_path / "c" / "lenet", tmp_path / "alexnet"]
    for i, run_dir in enumerate(dirs):
        run_dir.mkdir(parents=True)
        rundir.write_metrics(run_dir, [_row(i + 1)])
    histories = rundir.run_histories([*dirs[:2], str(dirs[3]), dirs[2]])
    assert list(histories) == ["lenet", "lenet'", "alexnet", "lenet''"]
    assert [rows[0]["epoch"] for rows in histories.values()] == [1, 2, 4, 3]


RESULT = {"run_dir": "runs/x", "test_acc": 0.875, "train_seconds": 12.5, "epochs": 3, "learned": True, "warnings": []}


def test_result_json_is_the_summary_and_the_accuracy_per_class(tmp_path: Path) -> None:
    rundir.write_result(tmp_path, RESULT, {"Bag": 0.5, "Coat": 1.0})
    expected = {**RESULT, "per_class_accuracy": {"Bag": 0.5, "Coat": 1.0}}
    assert json.loads((tmp_path / "result.json").read_text()) == expected
    assert rundir.read_result(tmp_path) == expected and rundir.read_result(str(tmp_path)) == expected


@pytest.mark.parametrize("result, missing", [("[]", "test_acc, train_seconds, epochs"), ("{}", "test_acc, "
                                             "train_seconds, epochs"),
                                             (json.dumps({**RESULT, "epochs": "3"}), "epochs"),
                                             (json.dumps({**RESULT, "test_acc": True, "train_seconds": None}),
                                              "test_acc, train_seconds")])
def test_read_result_names_what_a_damaged_result_lacks(tmp_path: Path, result: str, missing: str) -> None:
    (tmp_path / "result.json").write_text(result)
    with pytest.raises(RunFileError) as error:
        rundir.read_result(tmp_path)
    assert str(error.value) == (f"{tmp_path / 'result.json'} has no number for {missing}; the file was edited or "
                                f"damaged (re-create it with 'convzoo eval {tmp_path}' and a new run, or restore it)")


def test_read_result_refuses_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileError) as error:
        rundir.read_result(tmp_path)
    assert str(error.value) == (f"{tmp_path} has no result.json: the run has not finished (continue it with "
                                f"'convzoo train --resume {tmp_path}')")
    for text in (b"{", b"\xff{}", b"[" * 100_000):
        (tmp_path / "result.json").write_bytes(text)
        with pytest.raises(RunFileError) as error:
            rundir.read_result(tmp_path)
        assert str(error.value) == f"{tmp_path / 'result.json'} is not valid JSON"


# --- the epoch writer --------------------------------------------------------------------------------------------


def _snapshot(epoch: int, history: list[dict]) -> tuple:
    from convzoo.checkpoint import snapshot_state

    model = create_model("lenet")
    return snapshot_state(model, torch.optim.SGD(model.parameters(), lr=0.1), epoch=epoch, history=history)


def test_the_epoch_writer_writes_each_epochs_checkpoint_then_its_metrics(tmp_path: Path) -> None:
    import threading

    from convzoo.checkpoint import saved_epoch

    history: list[dict] = []
    with rundir.EpochWriter() as writer:
        for epoch in (1, 2):
            history.append(_row(epoch))
            writer.submit(tmp_path, _snapshot(epoch, history), history)
        writer.wait()
        assert saved_epoch(tmp_path / rundir.CHECKPOINT) == 2 and rundir.read_metrics(tmp_path) == history
        writer.wait()  # nothing pending
    assert rundir.resumed_epochs(tmp_path) == 2
    assert not any(thread.name.startswith("convzoo-checkpoint") for thread in threading.enumerate())


def test_the_epoch_writer_waits_for_each_write_on_its_own_thread(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``submit`` waits for the previous write, ``wait`` for the last (each slower than one 0.1 s slice of waiting);
    the history is copied into its text when submitted, not when written."""
    import threading
    import time

    from convzoo.rundir import epochs

    events: list[tuple] = []

    def slow_write(path: Path, snapshot: tuple) -> None:
        events.append(("start", snapshot, threading.current_thread().name))
        time.sleep(0.25)
        events.append(("end", snapshot))

    monkeypatch.setattr(epochs, "write_state", slow_write)
    history = [_row(1)]
    writer = rundir.EpochWriter()
    writer.submit(tmp_path, ("first",), history)
    history.append(_row(2))  # the next epoch's row, added while the first epoch's files are written
    assert not (tmp_path / rundir.METRICS).exists()
    writer.submit(tmp_path, ("second",), history[:1])
    assert events[:2] == [("start", ("first",), events[0][2]), ("end", ("first",))]
    assert events[0][2].startswith("convzoo-checkpoint") and events[0][2] != threading.current_thread().name
    writer.wait()
    assert events[2:] == [("start", ("second",), events[0][2]), ("end", ("second",))]
    assert rundir.read_metrics(tmp_path) == [_row(1)]
    writer.close()
    assert not any(thread.name.startswith("convzoo-checkpoint") for thread in threading.enumerate())


def test_a_failed_epoch_write_is_raised_by_the_next_submit_or_wait_not_by_close(tmp_path: Path) -> None:
    missing = tmp_path / "file"  # a directory that cannot be made: a regular file is in its place
    missing.write_text("x")
    writer = rundir.EpochWriter()
    writer.submit(missing, _snapshot(1, [_row()]), [_row()])
    with pytest.raises(FileSystemError, match="a part of the path is a file"):
        writer.wait()
    writer.wait()  # the failure was told once
    writer.submit(missing, _snapshot(1, [_row()]), [_row()])
    with pytest.raises(FileSystemError, match="a part of the path is a file"):
        writer.submit(tmp_path, _snapshot(1, [_row()]), [_row()])
    writer.wait()
    assert list(tmp_path.iterdir()) == [missing]  # the submit that raised wrote nothing
    writer.submit(tmp_path, _snapshot(1, [_row()]), [_row()])
    writer.wait()
    assert rundir.read_metrics(tmp_path) == [_row()]
    writer.submit(missing, _snapshot(1, [_row()]), [_row()])
    writer.close()  # the run is already failing: its own error is the one to report
    with pytest.raises(RuntimeError, match="shutdown"):
        writer.submit(tmp_path, _snapshot(1, [_row()]), [_row()])


# --- the lock and the run directory's life ------------------------------------------------------------------------


def test_the_lock_names_its_holder_and_is_released_with_its_file(tmp_path: Path) -> None:
    lock = rundir.RunLock(tmp_path)
    assert not lock.held
    lock.acquire()
    assert lock.held and (tmp_path / rundir.LOCK).read_text() == f"{os.getpid()}\n"
    holders = [("1234\n", "process 1234"), ("", "another process"), ("12a", "another process"),
               (None, "another process")]
    for holder, who in holders:
        if holder is None:
            (tmp_path / rundir.LOCK).unlink()
        else:
            (tmp_path / rundir.LOCK).write_text(holder)
        with pytest.raises(RunBusyError) as error:
            rundir.RunLock(str(tmp_path)).acquire()
        assert str(error.value) == (f"{tmp_path} is in use by {who} (a run is training there); wait for it to "
                                    "finish, or use another --out") and error.value.field == "out"
    lock.release()
    assert not lock.held and not (tmp_path / rundir.LOCK).exists()
    lock.release()  # a second release does nothing
    again = rundir.RunLock(tmp_path)
    again.acquire()
    (tmp_path / rundir.LOCK).unlink()
    again.release()  # its file already gone: the lock still goes
    assert not again.held
    rundir.RunLock(tmp_path).acquire()


def test_only_a_directory_is_locked(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        rundir.RunLock(tmp_path / "file").acquire()


def test_a_lock_whose_file_cannot_be_written_is_not_kept(tmp_path: Path) -> None:
    (tmp_path / rundir.LOCK).mkdir()
    with pytest.raises(FileSystemError):
        rundir.RunLock(tmp_path).acquire()
    (tmp_path / rundir.LOCK).rmdir()
    lock = rundir.RunLock(tmp_path)
    lock.acquire()  # the failed one let go of the directory
    lock.release()


def test_held_sweeps_temporary_files_and_writing_into_holds_only_run_directories(configured: Path,
                                                                                 tmp_path: Path) -> None:
    (configured / rundir.MARKER).write_text("{}")
    stale = configured / ".report.html.0123abcd.tmp.html"
    stale.write_text("half")
    (configured / ".notes.0123abcd.tmp").mkdir()  # a directory with a temporary's name is not a temporary file
    with rundir.held(str(configured)) as path:
        assert path == configured and (configured / rundir.LOCK).is_file() and not stale.exists()
        assert (configured / ".notes.0123abcd.tmp").is_dir()
        with pytest.raises(RunBusyError), rundir.writing_into(configured / "kernels.png"):
            pass
        with rundir.writing_into(str(tmp_path / "kernels.png")) as out:  # not a run directory: not held
            assert out == tmp_path / "kernels.png"
    assert not (configured / rundir.LOCK).exists()
    with rundir.writing_into(str(configured / "kernels.png")) as out:
        assert out == configured / "kernels.png" and (configured / rundir.LOCK).is_file()
    assert not (configured / rundir.LOCK).exists()


def test_the_sweep_removes_temporary_files_only(tmp_path: Path) -> None:
    (tmp_path / "target.txt").write_text("kept")
    (tmp_path / ".a.0123abcd.tmp").symlink_to(tmp_path / "target.txt")
    (tmp_path / ".b.0123abcd.tmp").write_text("half")
    (tmp_path / "model.safetensors").write_text("weights")
    from convzoo.rundir.layout import remove_temporary_files

    remove_temporary_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.0123abcd.tmp", "model.safetensors", "target.txt"]


def test_a_run_directory_is_created_marked_and_held(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "mine" / "lenet"  # two missing parents
    with rundir.RunDirectory(str(path)) as directory:
        assert directory.path == path and directory.opened is False and directory.created is False
        directory.check(False)
        assert not path.exists()
        directory.create(False)
        assert directory.created is True and directory.opened is True
        assert sorted(p.name for p in path.iterdir()) == [rundir.LOCK, rundir.MARKER]
        assert (path / rundir.MARKER).read_text() == '{\n  "format": "convzoo-run-1"\n}\n'
        with pytest.raises(RunBusyError):
            rundir.RunLock(path).acquire()
        (path / rundir.CHECKPOINT).write_text("epoch 1")
    assert sorted(p.name for p in path.iterdir()) == [rundir.MARKER, rundir.CHECKPOINT]
    with pytest.raises(ConfigError, match="already exists; use --resume"), rundir.RunDirectory(path) as directory:
        directory.check(False)
    assert not (path / rundir.LOCK).exists()
    (path / "report.html").write_text("page")
    with rundir.RunDirectory(path) as directory:
        directory.check(True)
        directory.create(True)  # overwrite: convzoo's files go, the directory stays
        assert directory.created is False and sorted(p.name for p in path.iterdir()) == [rundir.LOCK, rundir.MARKER]


def test_a_run_directory_this_call_created_is_removed_when_it_fails_before_its_first_epoch(tmp_path: Path) -> None:
    path = tmp_path / "run"
    with pytest.raises(KeyError), rundir.RunDirectory(path) as directory:
        directory.create(False)
        (path / rundir.CONFIG).write_text("{}")
        (path / ".metrics.jsonl.0123abcd.tmp.jsonl").write_text("half")
        raise KeyError("failed")
    assert not path.exists() and directory.opened is False
    with pytest.raises(KeyError), rundir.RunDirectory(path) as directory:  # something else appeared in it: kept
        directory.create(False)
        (path / "notes.txt").write_text("mine")
        raise KeyError("failed")
    assert sorted(p.name for p in path.iterdir()) == ["notes.txt"]
    (path / "notes.txt").unlink()
    with pytest.raises(KeyError), rundir.RunDirectory(path) as directory:  # it existed: not this call's to remove
        directory.create(False)
        raise KeyError("failed")
    assert sorted(p.name for p in path.iterdir()) == [rundir.MARKER] and directory.opened is True
    with pytest.raises(KeyError), rundir.RunDirectory(tmp_path / "kept") as directory:  # an epoch completed: kept
        directory.create(False)
        (tmp_path / "kept" / rundir.CHECKPOINT).write_text("epoch 1")
        raise KeyError("failed")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [rundir.MARKER, rundir.CHECKPOINT]
    with rundir.RunDirectory(tmp_path / "done") as directory:  # no failure: kept
        directory.create(False)
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == [rundir.MARKER]


def test_a_created_directory_is_not_removed_by_a_process_that_lost_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "run"
    directory = rundir.RunDirectory(path)
    directory.path.mkdir()
    directory.created = True  # as if created, but the lock was never taken
    with pytest.raises(KeyError), directory:
        raise KeyError("failed")
    assert path.is_dir()


def test_resume_holds_the_directory_and_sweeps_what_a_killed_writer_left(configured: Path) -> None:
    stale = configured / ".checkpoint.safetensors.0123abcd.tmp.safetensors"
    stale.write_text("half")
    with pytest.raises(KeyError), rundir.RunDirectory(configured) as directory:
        directory.resume()
        assert directory.opened is True and directory.created is False and not stale.exists()
        with pytest.raises(RunBusyError):
            rundir.RunLock(configured).acquire()
        raise KeyError("failed")
    assert sorted(p.name for p in configured.iterdir()) == ["config.json"]  # a resumed directory is never removed


def test_the_other_ranks_of_a_job_touch_nothing(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x").write_text("1")
    for path in (tmp_path / "new", tmp_path / "mine"):
        with rundir.RunDirectory(path, writer=False) as directory:
            directory.check(False)
            directory.resume()
            assert directory.opened is True and directory.writer is False
            directory.create(False)
            assert directory.opened is True and directory.created is False
    assert not (tmp_path / "new").exists() and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["x"]


# --- a run read back: the configuration to train, the trained model, what a failed run keeps ----------------------


def _checkpoint(run_dir: Path, epoch: int) -> None:
    from convzoo.checkpoint import write_state

    history = [_row(e) for e in range(1, epoch + 1)]
    write_state(run_dir / rundir.CHECKPOINT, _snapshot(epoch, history))


def _refused(message: str, field: str, **arguments: object) -> None:
    with pytest.raises(ConfigError) as error:
        rundir.resolve_run(**arguments)
    assert (str(error.value), error.value.field) == (message, field)


def test_resolve_run_makes_a_new_runs_configuration_and_directory(tmp_path: Path) -> None:
    from convzoo.config import recipe

    assert rundir.resolve_run("lenet") == (recipe("lenet", "d2l"), Path("runs/lenet-d2l-seed0"))
    config, out = rundir.resolve_run("lenet", str(tmp_path / "x"), recipe="fast", seed=3, epochs=None, resize=32,
                                     data="fashion-mnist")
    fast_epochs = recipe("lenet", "fast").epochs
    assert (config.recipe, config.seed, config.input_size, config.epochs, config.data) == ("fast", 3, 32, fast_epochs,
                                                                                           "fashion-mnist")
    assert out == tmp_path / "x"
    assert rundir.resolve_run("lenet", seed=2)[1] == Path("runs/lenet-d2l-seed2")
    assert rundir.resolve_run("lenet", data="photos")[0].data == str(Path.cwd() / "photos")
    assert rundir.resolve_run("lenet", data="~/photos")[0].data == os.path.expanduser("~/photos")


def test_resolve_run_refuses_what_a_front_door_got_wrong() -> None:
    with pytest.raises(TypeError) as error:
        rundir.resolve_run("lenet", learning_rate=0.1, colour="red")
    assert str(error.value) == "unknown settings ['colour', 'learning_rate']: see convzoo.config.TrainConfig"
    _refused("--out must not be empty", "out", model="lenet", out=" ")
    _refused("--resume must not be empty", "out", out="", resume=True)
    _refused("--model must not be empty", "model", model="", out="runs/x")
    _refused("train needs a MODEL (see 'convzoo models') or --resume RUN_DIR", "model")
    _refused("--data must not be empty", "data", model="lenet", data=" ")
    _refused("--resume needs the run's directory: give out", "out", resume=True)
    _refused("--overwrite replaces a run and --resume continues one: give one of them", "overwrite", out="runs/x",
             resume=True, overwrite=True)


def test_resolve_run_continues_a_run_with_the_changes_resume_allows(configured: Path) -> None:
    from dataclasses import replace

    config = rundir.read_run_config(configured)["config"]
    assert rundir.resolve_run(out=str(configured), resume=True) == (config, configured)
    assert rundir.resolve_run("lenet", configured, resume=True, epochs=5, lr=0.5, recipe="d2l", batch_size=None) == (
        replace(config, epochs=5, lr=0.5), configured)
    _refused(f"{configured} is a run of lenet, not alexnet", "model", model="alexnet", out=configured, resume=True)
    with pytest.raises(ConfigError, match="^--resume continues a run as it was configured: --recipe cannot change"):
        rundir.resolve_run(out=configured, resume=True, recipe="fast")
    _refused("--epochs must be at least 1, got 0", "epochs", out=configured, resume=True, epochs=0)
    (configured / "config.json").write_text("{}")
    with pytest.raises(RunFileError, match="is of format None"):
        rundir.resolve_run(out=configured, resume=True)


def test_resumed_epochs_and_what_a_failed_run_keeps(configured: Path, tmp_path: Path) -> None:
    assert rundir.resume_hint(None) == "nothing was written"
    assert rundir.resume_hint(tmp_path / "missing") == "nothing was written"
    assert rundir.resumed_epochs(configured) == 0
    assert rundir.resume_hint(configured) == "no epoch was completed, so nothing was kept"
    _checkpoint(configured, 1)
    assert rundir.resumed_epochs(str(configured)) == 1
    assert rundir.resume_hint(configured) == (f"{configured} keeps 1 completed epoch; continue with: convzoo train "
                                              f"--resume {configured}")
    _checkpoint(configured, 2)
    assert rundir.resume_hint(configured, lr=0.05) == (f"{configured} keeps 2 completed epochs; continue with: "
                                                       f"convzoo train --resume {configured} --lr 0.05")
    (configured / rundir.CHECKPOINT).write_text("damaged")
    assert rundir.resumed_epochs(configured) == 0


def test_load_run_builds_the_runs_network_in_evaluation_mode(tmp_path: Path, configured: Path) -> None:
    from convzoo.config import recipe

    with pytest.raises(RunFileError) as error:
        rundir.load_run(configured)
    assert str(error.value) == (f"{configured} has no model.safetensors: the run has not finished (continue it with "
                                f"'convzoo train --resume {configured}')")
    model = create_model("lenet", num_classes=2, in_channels=3)
    data = {"data": "/x", "classes": ["cat", "dog"], "channels": 3, "size": 28}
    rundir.write_config(tmp_path, recipe("lenet"), model, torch.device("cpu"), "c", data)
    save_model(tmp_path / "model.safetensors", model)
    config, loaded, device = rundir.load_run(str(tmp_path), "cpu")
    assert config == recipe("lenet") and device == torch.device("cpu") and not loaded.training
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in loaded.state_dict().items())
    assert loaded(torch.zeros(1, 3, 28, 28)).shape == (1, 2)
