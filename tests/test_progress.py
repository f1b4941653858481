"""How a run shows itself: log lines, the terminal bar, the long-run note, TensorBoard, and a notebook's live view."""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

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


# --- each view driven by hand, on a clock of its own ----------------------------------------------

@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``progress``'s clock, set by the test: ``clock[0]`` seconds."""
    import convzoo.progress as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    return now


def sums(seen: int, loss: float, acc: float) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``step``'s arguments after ``seen`` images of mean loss ``loss`` and accuracy ``acc``."""
    return seen, torch.tensor(loss * seen), torch.tensor(acc * seen)


class Recorder(Progress):
    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def start(self, *args: object) -> None:
        self.calls.append((self.name, "start", args))

    def step(self, *args: object) -> None:
        self.calls.append((self.name, "step", args))

    def evaluating(self, *args: object) -> None:
        self.calls.append((self.name, "evaluating", args))

    def epoch_done(self, row: dict) -> None:
        self.calls.append((self.name, "epoch_done", (row,)))

    def close(self) -> None:
        self.calls.append((self.name, "close", ()))


def test_several_views_are_each_told_everything_in_order() -> None:
    calls: list = []
    views = Several([Recorder(calls, "a"), Recorder(calls, "b")])
    config = tiny()
    views.start(config, 1, 4, 150)
    views.step(2, 64, "loss", "correct")
    views.evaluating(1, 3)
    views.epoch_done({"epoch": 2})
    views.close()
    assert calls == [(name, what, args) for what, args in [
        ("start", (config, 1, 4, 150)), ("step", (2, 64, "loss", "correct")), ("evaluating", (1, 3)),
        ("epoch_done", ({"epoch": 2},)), ("close", ())] for name in "ab"]


def test_what_a_view_says_is_running() -> None:
    view = Progress()
    view.start(tiny(epochs=10), 2, 4, 150)
    assert (view.stage, view.scored_on) == ("epoch 3/10", "test")
    view.epoch_done({"epoch": 3})
    assert view.stage == "epoch 4/10"
    view.start(tiny(epochs=10, val_fraction=0.1), 0, 4, 150)
    assert (view.stage, view.scored_on) == ("epoch 1/10", "validation")
    view.start(tiny(epochs=10, val_fraction=0.1), 10, 0, 150)  # a finished run, evaluated: the test set
    assert (view.stage, view.scored_on) == ("evaluation", "test")
    assert view.step(1, 1, torch.tensor(0.0), torch.tensor(0)) is None and view.close() is None


class Flushed(io.StringIO):
    """A log file that counts its flushes (a line must reach the file as it is printed)."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_log_lines_on_a_clock(clock: list[float]) -> None:
    stream = Flushed()
    view = LogLines(interval=1.0, stream=stream)
    view.start(tiny(), 0, 5, 150)
    view.step(1, *sums(32, 2.0, 0.1))  # the warm-up step starts the epoch's clock
    clock[0] = 100.5
    view.step(2, *sums(64, 1.5, 0.2))  # not yet an interval
    clock[0] = 101.0
    view.step(3, *sums(96, 1.25, 0.5))
    clock[0] = 101.25
    view.step(4, *sums(128, 1.0, 0.5))
    clock[0] = 101.5
    view.step(5, *sums(160, 1.0, 0.5))  # the epoch's last step: fit's epoch line says it
    assert stream.getvalue() == "epoch 1/2  step 3/5 (60%)  loss 1.2500  acc 0.5000  64 ex/s, epoch ends in 1 s\n"
    assert stream.flushes == 1
    stream.truncate(0), stream.seek(0)
    clock[0] = 200.0
    view.evaluating(1, 4)  # the evaluation's clock starts
    clock[0] = 200.75
    view.evaluating(2, 4)
    clock[0] = 201.0
    view.evaluating(3, 4)
    clock[0] = 203.0
    view.evaluating(4, 4)  # the last batch: the epoch line follows
    assert stream.getvalue() == "epoch 1/2  scoring the test set: batch 3/4\n"


def test_log_lines_go_to_stderr_every_half_minute(capsys: pytest.CaptureFixture[str], clock: list[float]) -> None:
    view = LogLines()
    assert view.interval == 30.0 and view.stream is None
    view.start(tiny(val_fraction=0.1), 0, 0, 150)
    view.evaluating(1, 3)
    clock[0] += 29.9
    view.evaluating(2, 3)
    assert capsys.readouterr().err == ""
    view.start(tiny(val_fraction=0.1, epochs=3), 1, 4, 150)
    view.evaluating(1, 3)
    clock[0] += 30.0
    view.evaluating(2, 3)
    assert capsys.readouterr().err == "epoch 2/3  scoring the validation set: batch 2/3\n"


def test_a_step_line_written_out() -> None:
    view = LogLines()
    view.start(tiny(epochs=12), 10, 2500, 150)
    assert view.step_text(1250, 0.123456, 0.87654, 12345.6, 3725.0) == \
        "epoch 11/12  step 1,250/2,500 (50%)  loss 0.1235  acc 0.8765  12,346 ex/s, epoch ends in 1 h 02 min"
    assert view.step_text(1, 2.0, 0.1, 0.4, None) == "epoch 11/12  step 1/2,500 (0%)  loss 2.0000  acc 0.1000  0 ex/s"


def test_the_terminal_bar_names_what_it_scores() -> None:
    stream = io.StringIO()
    bar = TerminalBar(stream)
    bar.start(tiny(val_fraction=0.1), 0, 4, 150)
    bar.evaluating(1, 2)
    assert bar._bar is not None and bar._bar.total == 2 and bar._bar.unit == "batch"
    bar.evaluating(2, 2)
    assert bar._bar is None  # closed at the last batch
    assert stream.getvalue().startswith("\repoch 1/2 val:   0%|")
    stream = io.StringIO()
    bar = TerminalBar(stream)
    bar.start(tiny(), 2, 0, 150)  # only evaluated
    bar.evaluating(1, 3)
    assert "test set:" in stream.getvalue() and "0/3" in stream.getvalue()
    bar.close()
    assert bar._bar is None
    bar.close()  # twice is fine
    assert stream.getvalue().endswith("\r")  # the bar is cleared, not left behind (leave=False)
    assert TerminalBar().stream is sys.stderr


def test_the_terminal_bar_counts_steps_and_shows_the_running_means() -> None:
    stream = io.StringIO()
    bar = TerminalBar(stream)
    bar.start(tiny(), 1, 3, 150)
    bar.step(1, *sums(32, 1.25, 0.5))
    assert (bar._bar.total, bar._bar.n, bar._bar.desc, bar._bar.unit) == (3, 1, "epoch 2/2", "batch")
    assert bar._bar.postfix == "loss=1.250, acc=0.500"
    bar.step(2, *sums(64, 0.5, 0.75))
    assert bar._bar.n == 2 and bar._bar.postfix == "loss=1.250, acc=0.500"  # every 20 steps
    first = bar._bar
    bar.step(1, *sums(32, 1.0, 0.25))  # a new epoch: a new bar
    assert bar._bar is not first and bar._bar.n == 1 and first.disable
    bar.close()


def test_the_forecast_on_a_clock(clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    notes: list[str] = []
    forecast = Forecast(notes.append)
    assert (forecast.threshold, forecast.seconds) == (300, 3.0)
    forecast.start(tiny(epochs=10), 4, 100, 960)  # 6 epochs to go, of 100 steps of 32 images and 960 test images
    loss = torch.tensor(1.0)
    forecast.step(1, 32, loss, loss)  # the warm-up: the clock starts after it
    clock[0] = 101.0
    forecast.step(2, 64, loss, loss)
    clock[0] = 102.0
    forecast.step(3, 96, loss, loss)
    clock[0] = 103.0
    forecast.step(4, 128, loss, loss)  # 3 s of 3 timed steps: 1 s a step, and an image scored in 1/96 s
    assert notes == ["this run will take about 11 min 00 s (1 min 50 s an epoch, 6 epochs); quicker: --recipe fast, "
                     "--epochs 2, a GPU (--device cuda)"]
    clock[0] = 200.0
    forecast.step(5, 160, loss, loss)
    forecast.step(1, 32, loss, loss)
    assert len(notes) == 1  # said once

    notes.clear()
    forecast = Forecast(notes.append, threshold=660.0)  # exactly as long: not announced
    forecast.start(tiny(epochs=10), 4, 100, 960)
    clock[0] = 100.0
    for done in range(1, 6):
        forecast.step(done, 32 * done, loss, loss)
        clock[0] += 1.0
    assert notes == [] and forecast._decided


def test_the_forecast_waits_for_three_seconds_and_four_steps(clock: list[float],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import convzoo.estimate

    monkeypatch.setattr(convzoo.estimate, "resolve_device", lambda name: torch.device("cuda"))
    notes: list[str] = []
    forecast = Forecast(notes.append, threshold=0, seconds=3.0)
    forecast.start(tiny(epochs=2, recipe="fast"), 0, 100, 0)
    loss = torch.tensor(1.0)
    forecast.step(1, 32, loss, loss)
    clock[0] = 110.0
    forecast.step(2, 64, loss, loss)
    forecast.step(3, 96, loss, loss)  # slow steps, but only two timed
    assert not forecast._decided
    clock[0] = 112.0
    forecast.step(4, 128, loss, loss)  # 12 s for 3 steps: 4 s a step
    assert notes == ["this run will take about 13 min 20 s (6 min 40 s an epoch, 2 epochs); quicker: fewer --epochs"]

    notes.clear()
    forecast = Forecast(notes.append, threshold=0, seconds=3.0)
    forecast.start(tiny(epochs=1, recipe="fast"), 0, 100, 0)
    clock[0] = 100.0
    forecast.step(1, 32, loss, loss)
    for done in range(2, 6):
        clock[0] += 0.5
        forecast.step(done, 32 * done, loss, loss)
        assert not forecast._decided  # 4 steps, but under 3 s
    clock[0] = 103.0
    forecast.step(6, 192, loss, loss)  # 3 s for 5 steps: 0.6 s a step
    assert notes == ["this run will take about 1 min 00 s (1 min 00 s an epoch, 1 epochs); quicker: fewer --epochs"]

    notes.clear()
    forecast = Forecast(notes.append, threshold=0)
    forecast.start(tiny(epochs=1, recipe="fast"), 0, 3, 0)  # an epoch of three steps: decided at its end
    clock[0] = 100.0
    forecast.step(1, 32, loss, loss)
    clock[0] = 100.5
    forecast.step(2, 64, loss, loss)
    assert not forecast._decided
    clock[0] = 101.0
    forecast.step(3, 96, loss, loss)
    assert notes == ["this run will take about 2 s (2 s an epoch, 1 epochs); quicker: fewer --epochs"]


class _Handle:
    def __init__(self, shown: list, first: object) -> None:
        self.shown = [first]
        shown.append(self)

    def update(self, obj: object) -> None:
        self.shown.append(obj)


@pytest.fixture
def notebook(monkeypatch: pytest.MonkeyPatch) -> list[_Handle]:
    """IPython's display, recorded: each ``display`` a handle with what it showed; a plot is what it was drawn from."""
    pytest.importorskip("IPython")
    import IPython.display

    import convzoo.figures

    handles: list[_Handle] = []

    def display(obj: object, display_id: bool = False) -> _Handle:
        assert display_id is True
        return _Handle(handles, obj)

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr(IPython.display, "HTML", lambda text: ("html", text))
    monkeypatch.setattr(IPython.display, "Image", lambda data: ("png", data))
    monkeypatch.setattr(convzoo.figures, "live_curves_figure", lambda train, test, epochs, *, title, scored_on:
                        (list(train), list(test), epochs, title, scored_on))
    monkeypatch.setattr(convzoo.figures, "figure_png", lambda drawn: drawn)
    return handles


def test_a_notebook_view_on_a_clock(notebook: list[_Handle], clock: list[float]) -> None:
    view = NotebookView()
    assert (view.interval, view.plot_interval) == (0.5, 5.0)
    view.start(tiny(val_fraction=0.1), 0, 4, 150)
    plot, line = notebook
    assert (view.epoch, view.steps, view.test_images) == (0, 4, 150)
    title = "lenet, d2l recipe"
    assert plot.shown == [("png", ([], [], 2, title, "validation"))]
    assert line.shown == [("html", "<pre style='margin: 0'>lenet: epoch 1/2</pre>")]
    view.step(1, *sums(32, 2.0, 0.125))
    clock[0] = 100.25
    view.step(2, *sums(64, 1.5, 0.25))  # under half a second: nothing shown
    clock[0] = 100.5
    view.step(3, *sums(96, 1.25, 0.5))
    assert line.shown[-1] == ("html", "<pre style='margin: 0'>epoch 1/2  step 3/4 (75%)  loss 1.2500  acc 0.5000  "
                                      "128 ex/s, epoch ends in 0 s</pre>")
    assert plot.shown[-1] == ("png", ([(0.75, 1.25, 0.5)], [], 2, title, "validation"))
    clock[0] = 101.0
    view.step(4, *sums(128, 1.0, 0.75))  # the last step is shown; the plot waits 5 s
    assert line.shown[-1][1].startswith("<pre style='margin: 0'>epoch 1/2  step 4/4 (100%)  loss 1.0000  acc 0.7500  ")
    assert len(plot.shown) == 2 and len(line.shown) == 3
    view.evaluating(1, 2)
    clock[0] = 101.25
    view.evaluating(2, 2)
    assert line.shown[-1] == ("html", "<pre style='margin: 0'>epoch 1/2  scoring the validation set: batch 2/2</pre>")
    view.epoch_done({"epoch": 1, "train_loss": 0.95, "train_acc": 0.625, "val_acc": 0.75, "seconds": 3.25})
    assert plot.shown[-1] == ("png", ([(0.75, 1.25, 0.5), (1.0, 1.0, 0.75), (1, 0.95, 0.625)], [(1, 0.75)], 2, title,
                                      "validation"))
    assert line.shown[-1] == ("html", "<pre style='margin: 0'>epoch 1/2  loss 0.9500  train acc 0.6250  val acc "
                                      "0.7500  3.2 s</pre>")
    clock[0] = 105.5
    view.step(1, *sums(32, 0.5, 0.875))
    clock[0] = 106.25
    view.step(2, *sums(64, 0.5, 0.875))  # 5 s after the last plot: drawn again
    assert plot.shown[-1][1][0][-1] == (1.5, 0.5, 0.875) and line.shown[-1][1].count("epoch 2/2  step 2/4") == 1
    view.epoch_done({"epoch": 2, "train_loss": 0.5, "train_acc": 0.875, "test_acc": 0.5, "seconds": 0.04})
    assert plot.shown[-1][1][1] == [(1, 0.75), (2, 0.5)]
    assert line.shown[-1][1] == ("<pre style='margin: 0'>epoch 2/2  loss 0.5000  train acc 0.8750  test acc 0.5000  "
                                 "0.0 s</pre>")


def test_a_notebook_view_plots_its_first_points_once_its_clock_allows(notebook: list[_Handle],
                                                                         clock: list[float]) -> None:
    clock[0] = 4.0  # a clock that started 4 s ago
    view = NotebookView()
    view.start(tiny(), 0, 4, 150)
    view.step(1, *sums(32, 2.0, 0.125))
    clock[0] = 4.75
    view.step(2, *sums(64, 1.5, 0.25))  # shown; 4.75 s since the clock's start: not yet plotted
    clock[0] = 5.25
    view.step(3, *sums(96, 1.5, 0.25))  # over 5 s: plotted
    plot = notebook[0]
    assert [len(shown[1][0]) for shown in plot.shown] == [0, 2]


def test_a_notebook_view_of_an_evaluation_has_no_plot(notebook: list[_Handle], clock: list[float]) -> None:
    clock[0] = 0.75  # a clock that started under a second ago: the first batch is still shown
    view = NotebookView()
    view.start(tiny(), 2, 0, 150)
    (line,) = notebook
    assert line.shown == [("html", "<pre style='margin: 0'>lenet: evaluation</pre>")]
    view.evaluating(1, 3)  # shown: nothing was shown before
    clock[0] = 1.0
    view.evaluating(2, 3)
    view.evaluating(3, 3)
    assert [shown[1] for shown in line.shown[1:]] == [
        "<pre style='margin: 0'>evaluation  scoring the test set: batch 1/3</pre>",
        "<pre style='margin: 0'>evaluation  scoring the test set: batch 3/3</pre>"]
    assert view._text("<a & b>") == "<pre style='margin: 0'>&lt;a &amp; b&gt;</pre>"


def test_a_single_step_epoch_is_shown_without_a_time_left(notebook: list[_Handle], clock: list[float]) -> None:
    view = NotebookView()
    view.start(tiny(), 0, 1, 150)
    view.step(1, *sums(32, 2.0, 0.25))
    assert notebook[1].shown[-1] == ("html", "<pre style='margin: 0'>epoch 1/2  step 1/1 (100%)  loss 2.0000  "
                                             "acc 0.2500  0 ex/s</pre>")


class _Writer:
    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.flushed, self.closed = log_dir, [], 0, False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        self.closed = True


def test_tensorboard_scalars_on_a_clock(clock: list[float], tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    notes: list[str] = []
    board = TensorBoard(tmp_path / "tb dir" / "run", notes.append)
    board.close()  # before it started: nothing to close
    writers: list[_Writer] = []
    board._open = lambda: writers.append(_Writer(str(board.log_dir))) or writers[-1]
    clock[0] = 5.0  # five seconds since the clock's origin: the first step is logged
    config = tiny()
    board.start(config, 1, 4, 150)
    assert notes == [f"TensorBoard scalars go to {tmp_path / 'tb dir' / 'run'} (see them with: tensorboard --logdir "
                     f"'{tmp_path / 'tb dir'}')"]
    (writer,) = writers
    assert (board.config, board.epoch, board.steps, board.test_images) == (config, 1, 4, 150)
    board.step(1, *sums(32, 2.0, 0.5))  # the first: more than 5 s since none
    clock[0] = 9.9
    board.step(2, *sums(64, 1.5, 0.5))
    clock[0] = 10.0
    board.step(3, *sums(96, 1.25, 0.5))
    clock[0] = 10.5
    board.step(4, *sums(128, 1.0, 0.5))  # the epoch's last step
    assert writer.scalars == [("train/running_loss", 2.0, 5), ("train/running_loss", 1.25, 7),
                              ("train/running_loss", 1.0, 8)]
    writer.scalars.clear()
    board.epoch_done({"epoch": 2, "train_loss": 0.5, "train_acc": 0.75, "val_acc": 0.625, "lr": 0.01, "seconds": 1.0,
                      "examples_per_sec": 99.5})
    assert writer.scalars == [("epoch/train_loss", 0.5, 2), ("epoch/train_acc", 0.75, 2), ("epoch/val_acc", 0.625, 2),
                              ("epoch/lr", 0.01, 2), ("epoch/examples_per_sec", 99.5, 2)]
    assert writer.flushed == 1 and board.epoch == 2 and not writer.closed
    board.close()
    assert writer.closed


def test_tensorboard_without_its_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo.errors import ConfigError
    from convzoo.progress import _note

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError) as caught:
        TensorBoard("tb")
    assert str(caught.value) == "--tensorboard needs the tensorboard package: pip install 'convzoo[tensorboard]'"
    assert caught.value.field == "tensorboard"
    stderr = Flushed()
    monkeypatch.setattr(sys, "stderr", stderr)
    _note("a <b>")
    assert (stderr.getvalue(), stderr.flushes) == ("note: a <b>\n", 1)  # the note is out before the run goes on


def test_in_notebook_is_a_zmq_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    class ZMQInteractiveShell:
        pass

    class Kernel(ZMQInteractiveShell):
        pass

    class TerminalInteractiveShell:
        pass

    ipython = types.ModuleType("IPython")
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    assert not in_notebook()  # an IPython without get_ipython
    for shell, inside in ((Kernel(), True), (ZMQInteractiveShell(), True), (TerminalInteractiveShell(), False),
                          (None, False)):
        ipython.get_ipython = lambda shell=shell: shell
        assert in_notebook() is inside
    monkeypatch.delitem(sys.modules, "IPython")
    assert not in_notebook()


def test_progress_for_builds_each_view(monkeypatch: pytest.MonkeyPatch, notebook: list[_Handle],
                                       tmp_path: Path) -> None:
    import convzoo.progress as progress

    def note(message: str) -> None:
        pass

    bar = progress_for("bar", note=note)
    assert [type(v) for v in bar.views] == [TerminalBar, Forecast] and bar.views[1].note is note
    assert [type(v) for v in progress_for("notebook").views] == [NotebookView, Forecast]
    assert progress_for("log").views[1].note is progress._note
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    assert [type(v) for v in progress_for(True).views] == [NotebookView, Forecast]
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True)
    assert [type(v) for v in progress_for("auto").views] == [TerminalBar, Forecast]
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    assert [type(v) for v in progress_for(True).views] == [LogLines, Forecast]
    with pytest.raises(ValueError) as caught:
        progress_for("fancy")
    assert str(caught.value) == "progress must be True, False, None, a Progress or one of bar, log, notebook, none; " \
                                "got 'fancy'"
    pytest.importorskip("tensorboard")
    board = progress_for(False, tensorboard=tmp_path / "tb", note=note)
    assert [type(v) for v in board.views] == [Progress, TensorBoard]
    assert board.views[1].log_dir == tmp_path / "tb" and board.views[1]._note is note
    assert [type(v) for v in progress_for("log", tensorboard=tmp_path / "tb").views] == [LogLines, Forecast,
                                                                                         TensorBoard]
    assert not (tmp_path / "tb").exists()  # made when training starts


def test_a_speed_over_no_time_is_not_a_division_by_zero(clock: list[float]) -> None:
    """A clock that did not move between steps (a coarse timer): the speed is images over a nanosecond."""
    stream = io.StringIO()
    view = LogLines(interval=0, stream=stream)
    view.start(tiny(), 0, 3, 150)
    view.step(1, *sums(32, 1.0, 0.5))
    view.step(2, *sums(64, 1.0, 0.5))
    assert stream.getvalue() == ("epoch 1/2  step 2/3 (67%)  loss 1.0000  acc 0.5000  32,000,000,000 ex/s, "
                                 "epoch ends in 0 s\n")
    bar = TerminalBar(io.StringIO())
    bar.start(tiny(), 0, 30, 150)
    for done in range(1, 22):
        bar.step(done, *sums(32 * done, 1.0, 0.5))
    assert bar._bar.postfix == "loss=1.000, acc=0.500, ex_s=640,000,000,000"
    bar.close()
