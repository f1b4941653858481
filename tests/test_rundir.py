"""The run directory: what convzoo may replace, the one-writer lock, reading damaged files, weights against config."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convzoo import rundir
from convzoo.checkpoint import CheckpointError, save_model
from convzoo.errors import ConfigError, RunBusyError
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
