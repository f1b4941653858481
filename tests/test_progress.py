"""How a run shows itself: log lines, the terminal bar, the long-run note, TensorBoard, and a notebook's live view."""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from convzoo import api
from convzoo.config import recipe
from convzoo.progress import (
    Forecast,
    LogLines,
    NotebookView,
    Progress,
    Several,
    TensorBoard,
    TerminalBar,
    in_notebook,
    progress_for,
)
from convzoo.train import fit

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
ESCAPES = ("\x1b[", "\r")  # what a terminal bar writes and a notebook or a log file must not get


def tiny(**overrides: object):
    """A LeNet run of a few seconds on the committed slice: 4 steps an epoch, a test set of 3 batches."""
    values = {"optimizer": "adamw", "lr": 0.005, "batch_size": 32, "epochs": 2, "data_dir": str(SLICE),
              "device": "cpu", "limit_train": 128, "limit_test": 150, "eval_batch_size": 50, **overrides}
    return recipe("lenet", **values)


def test_log_lines_report_within_each_epoch_and_evaluation(tmp_path: Path) -> None:
    stream = io.StringIO()
    fit(tiny(), tmp_path / "run", log=lambda _: None, progress=LogLines(interval=0, stream=stream))
    lines = stream.getvalue().splitlines()
    steps = [line for line in lines if " step " in line]
    assert steps and steps[0].startswith("epoch 1/2  step 2/4 (50%)  loss ")
    assert any(line.startswith("epoch 2/2  step 3/4") for line in steps)
    assert all(" ex/s" in line and "epoch ends in" in line for line in steps)
    assert "epoch 1/2  scoring the test set: batch 2/3" in lines
    assert not any(escape in stream.getvalue() for escape in ESCAPES)


def test_log_lines_stay_quiet_in_short_epochs_and_evaluations(tmp_path: Path) -> None:
    stream = io.StringIO()
    fit(tiny(epochs=1), tmp_path / "run", log=lambda _: None, progress=LogLines(interval=30, stream=stream))
    run = api.load(tmp_path / "run", device="cpu")
    run.evaluate(progress=LogLines(interval=30, stream=stream))
    assert stream.getvalue() == ""
    run.evaluate(progress=LogLines(interval=0, stream=stream))
    assert stream.getvalue() == "evaluation  scoring the test set: batch 2/3\n"


def test_the_terminal_bar_shows_epochs_and_evaluations(tmp_path: Path) -> None:
    stream = io.StringIO()
    fit(tiny(), tmp_path / "run", log=lambda _: None, progress=TerminalBar(stream))
    text = stream.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2 test" in text and "loss=" in text


def test_a_long_run_is_announced_once_with_what_would_shorten_it(tmp_path: Path) -> None:
    notes: list[str] = []
    fit(tiny(epochs=3), tmp_path / "long", log=lambda _: None, progress=Forecast(notes.append, threshold=0))
    assert len(notes) == 1
    assert notes[0].startswith("this run will take about ") and "an epoch, 3 epochs); quicker: " in notes[0]
    assert "--recipe fast" in notes[0] and "a GPU (--device cuda)" in notes[0]
    assert "--limit-train" not in notes[0]  # it is already limited
    notes.clear()
    fit(tiny(), tmp_path / "short", log=lambda _: None, progress=Forecast(notes.append))
    assert notes == []


def test_tensorboard_gets_every_epoch(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(tiny(), tmp_path / "run", log=lambda _: None, progress=TensorBoard(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"epoch/train_loss", "epoch/train_acc", "epoch/test_acc", "epoch/lr", "train/running_loss"} <= set(tags)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("epoch/test_acc")] == \
        [(row["epoch"], round(row["test_acc"], 5)) for row in history]


def test_train_tensorboard_flag_writes_next_to_the_run(tmp_path: Path,
                                                       run_cli: Callable[..., tuple[int, str, str]]) -> None:
    pytest.importorskip("tensorboard")
    code, _, err = run_cli("train", "lenet", "--epochs", "1", "--limit-train", "64", "--limit-test", "50",
                           "--data-dir", str(SLICE), "--device", "cpu", "--out", str(tmp_path / "runs" / "a"),
                           "--tensorboard")
    assert code == 0, err
    assert list((tmp_path / "runs" / "tensorboard" / "a").glob("events.out.tfevents.*"))
    board = tmp_path / "runs" / "tensorboard"
    assert f"note: TensorBoard scalars go to {board / 'a'} (see them with: tensorboard --logdir {board})" in err


@pytest.mark.parametrize("bad", [["--lr", "-1"], ["--data-dir", "{tmp}/nowhere"], ["--out", "{tmp}/runs/mine"]])
def test_train_tensorboard_creates_nothing_for_a_command_that_fails_its_checks(
    bad: list[str], tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """Issue 23: ``--tensorboard`` made its directory and event file before the run's checks refused it."""
    pytest.importorskip("tensorboard")
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "notes.txt").write_text("the user's")  # not a run: refused as --out
    argv = ["train", "lenet", "--epochs", "1", "--limit-train", "64", "--limit-test", "50", "--data-dir", str(SLICE),
            "--device", "cpu", "--out", str(tmp_path / "runs" / "a"), *bad, "--tensorboard"]
    code, out, err = run_cli(*(a.format(tmp=tmp_path) for a in argv))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "TensorBoard" not in out + err
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == \
        ["runs", "runs/mine", "runs/mine/notes.txt"]


def test_progress_for_picks_a_view() -> None:
    assert not in_notebook()  # pytest is no Jupyter kernel
    assert type(progress_for(False)) is Progress and type(progress_for("none")) is Progress
    log = progress_for("log")
    assert isinstance(log, Several) and [type(v) for v in log.views] == [LogLines, Forecast]
    chosen = progress_for(None)  # stderr under pytest is no terminal
    assert [type(v) for v in chosen.views] == [TerminalBar if sys.stderr.isatty() else LogLines, Forecast]
    mine = LogLines()
    assert progress_for(mine) is mine
    with pytest.raises(ValueError, match="progress must be"):
        progress_for("fancy")


def test_a_notebook_shows_a_live_plot_and_a_progress_line(tmp_path: Path) -> None:
    """A notebook cell that trains: its outputs are a PNG plot and an HTML line updated in place, and text."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from convzoo import api\n"
        f"run = api.train('lenet_modern', recipe='fast', out={str(tmp_path / 'run')!r}, data_dir={str(SLICE)!r},\n"
        "                device='cpu', epochs=2, limit_train=512, limit_test=200)\n"
        "print(f'accuracy {run.test_acc}')\n")]
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
                            ).execute()
    outputs = notebook.cells[0].outputs
    displays = [o for o in outputs if o.output_type == "display_data"]
    assert [sorted(set(o.data) - {"text/plain"}) for o in displays] == [["image/png"], ["text/html"]]
    assert base64.b64decode(displays[0].data["image/png"]).startswith(b"\x89PNG")
    assert displays[1].data["text/html"].startswith("<pre") and "epoch 2/2" in displays[1].data["text/html"]
    text = "".join(o.text for o in outputs if o.output_type == "stream")
    assert "epoch   2/2" in text and "accuracy " in text
    assert not any(escape in text for escape in ESCAPES)
    assert NotebookView.plot_interval > 0


def test_the_terminal_bar_shows_a_speed_only_once_steps_were_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    """No examples/s for an epoch's first step (it once showed 54,387,083: 256 images over the microseconds
    since the bar opened); after it, the images of the steps since the first over their time."""
    import torch

    import convzoo.progress as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    stream = io.StringIO()
    bar = TerminalBar(stream)
    bar.start(tiny(), 0, 60, 150)
    rates = []
    for done in range(1, 42):
        now[0] += 0.01  # 256 images a step, 0.01 s each: 25,600 examples/s
        bar.step(done, 256 * done, torch.tensor(2.3 * done * 256), torch.tensor(25.0 * done))
        postfix = bar._bar.postfix or ""
        rates.append(postfix.split("ex_s=")[1] if "ex_s=" in postfix else None)
    bar.close()
    assert rates[0] is None and rates[19] is None  # steps 1 to 20: the first step's postfix, no speed
    assert rates[20] == rates[40] == "25,600"
    assert "loss=2.300" in stream.getvalue()
