"""How a run in progress shows itself: a bar in a terminal, a live plot in a notebook, lines in a log file.

``fit`` calls a ``Progress`` at five points: ``start`` (once the run is set up), ``step`` after
every training step, ``evaluating`` after every test batch, ``epoch_done`` with the epoch's
metrics row, and ``close``. The base class shows nothing; ``progress_for`` picks the view:

    TerminalBar    stderr is a terminal: tqdm's bar for each epoch and each evaluation, as before
    NotebookView   in Jupyter (an IPython kernel): a plot of loss and accuracy per epoch, the book's
                   ``Animator``, and a progress line below it, both updated in place (PNG and HTML
                   display data; no terminal escape codes)
    LogLines       anything else (a log file, a pipe): a line every ``interval`` seconds within an epoch
    Forecast       with any of these: after the first steps, one ``note:`` line if the run will take
                   longer than a few minutes, with the options that would shorten it
    TensorBoard    ``tensorboard=DIR``: scalars per epoch (and the running loss) for TensorBoard

The epoch lines (``epoch 3/10 loss ...``) are ``fit``'s ``log``, not a view's: they are printed
whatever the view. Reading the running loss waits for the device, so views read it only when
they show it (a few times a second at most).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import torch

from .checkpoint import SHORT, epoch_score
from .config import TrainConfig
from .errors import ConfigError
from .escape import html_text
from .estimate import LONG_RUN_SECONDS, format_seconds, run_seconds, shorter
from .terms import option


class Progress:
    """A view of a run in progress; this base class shows nothing (what ``progress=False`` gives)."""

    def start(self, config: TrainConfig, start_epoch: int, steps: int, test_images: int) -> None:
        """The run is set up: it trains epochs ``start_epoch + 1 .. config.epochs`` of ``steps`` steps each
        (``steps`` 0: a finished run is only evaluated)."""
        self.config, self.epoch, self.steps, self.test_images = config, start_epoch, steps, test_images

    @property
    def stage(self) -> str:
        """What is running: ``epoch 3/10``, or ``evaluation`` when the view shows only that."""
        return f"epoch {self.epoch + 1}/{self.config.epochs}" if self.steps else "evaluation"

    @property
    def scored_on(self) -> str:
        """What an evaluation scores: ``test`` or, for the epochs of a run that holds one out, ``validation``."""
        return "validation" if self.steps and self.config.val_fraction else "test"

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """``done`` steps of the current epoch are trained, on ``seen`` images; the sums are on the device."""

    def evaluating(self, done: int, total: int) -> None:
        """``done`` of the ``total`` test batches are scored."""

    def epoch_done(self, row: dict) -> None:
        """An epoch ended; ``row`` is its line of ``metrics.jsonl``."""
        self.epoch = row["epoch"]

    def close(self) -> None:
        """The run ended (finished, failed or interrupted)."""


class Several(Progress):
    """Every view of ``views``, in order."""

    def __init__(self, views: Sequence[Progress]) -> None:
        self.views = list(views)

    def start(self, config: TrainConfig, start_epoch: int, steps: int, test_images: int) -> None:
        for view in self.views:
            view.start(config, start_epoch, steps, test_images)

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        for view in self.views:
            view.step(done, seen, loss_sum, correct)

    def evaluating(self, done: int, total: int) -> None:
        for view in self.views:
            view.evaluating(done, total)

    def epoch_done(self, row: dict) -> None:
        for view in self.views:
            view.epoch_done(row)

    def close(self) -> None:
        for view in self.views:
            view.close()


class _Paced(Progress):
    """A view that updates at most every ``interval`` seconds: ``due()`` says when."""

    interval = 0.5

    def __init__(self) -> None:
        self._shown = 0.0

    def due(self, last: bool = False) -> bool:
        now = time.perf_counter()
        if last or now - self._shown >= self.interval:
            self._shown = now
            return True
        return False

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        if done == 1:  # the epoch's clock starts after its first step (a warm-up: allocation, kernel choice)
            self._started, self._first = time.perf_counter(), seen
            self._shown = self._started
            if done < self.steps:
                return
        if self.due(done == self.steps):
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            left = (self.steps - done) * elapsed / (done - 1) if done > 1 else None
            self.show_step(done, loss_sum.item() / seen, correct.item() / seen, (seen - self._first) / elapsed, left)

    def show_step(self, done: int, loss: float, acc: float, examples_per_sec: float, left: float | None) -> None:
        """Show step ``done`` of the epoch: running loss and accuracy, speed, seconds left in the epoch."""

    def step_text(self, done: int, loss: float, acc: float, examples_per_sec: float, left: float | None) -> str:
        ends = f", epoch ends in {format_seconds(left)}" if left is not None else ""
        return (f"{self.stage}  step {done:,}/{self.steps:,} "
                f"({done / self.steps:.0%})  loss {loss:.4f}  acc {acc:.4f}  {examples_per_sec:,.0f} ex/s{ends}")


class TerminalBar(Progress):
    """tqdm's bar on a terminal: one for each epoch's steps and one for each evaluation, both cleared when done."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self._bar = None

    def _open(self, total: int, desc: str, unit: str) -> None:
        from tqdm import tqdm

        self._close_bar()
        self._bar = tqdm(total=total, desc=desc, leave=False, unit=unit, file=self.stream)
        self._started = time.perf_counter()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        if done == 1:  # the clock starts after the first step (a warm-up), as the other views' does
            self._open(self.steps, self.stage, "batch")
            self._first = seen
        self._bar.update()
        if done % 20 == 1:
            shown = {"loss": f"{loss_sum.item() / seen:.3f}", "acc": f"{correct.item() / seen:.3f}"}
            if done > 1:  # the images of the steps since the first over their time: none until there are some
                shown["ex_s"] = f"{(seen - self._first) / max(time.perf_counter() - self._started, 1e-9):,.0f}"
            self._bar.set_postfix(shown)

    def evaluating(self, done: int, total: int) -> None:
        if done == 1:
            self._open(total, f"{self.stage} {SHORT[self.scored_on]}" if self.steps else "test set", "batch")
        self._bar.update()
        if done == total:
            self._close_bar()

    def close(self) -> None:
        self._close_bar()


class LogLines(_Paced):
    """For a log file: a line on ``stream`` every ``interval`` seconds of a long epoch or evaluation.

    Epochs shorter than ``interval`` print nothing here (``fit``'s epoch line says it all).
    """

    def __init__(self, interval: float = 30.0, stream: TextIO | None = None) -> None:
        super().__init__()
        self.interval, self.stream = interval, stream

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def show_step(self, done: int, loss: float, acc: float, examples_per_sec: float, left: float | None) -> None:
        if done < self.steps:
            self._print(self.step_text(done, loss, acc, examples_per_sec, left))

    def evaluating(self, done: int, total: int) -> None:
        if done == 1:  # the evaluation's clock: a line only once it has run for ``interval``
            self._shown = time.perf_counter()
        elif done < total and self.due():
            self._print(f"{self.stage}  scoring the {self.scored_on} set: batch {done}/{total}")


class NotebookView(_Paced):
    """In Jupyter: the run's curves, redrawn at most every ``plot_interval`` seconds and after every epoch,
    with a progress line below them; both are display outputs updated in place."""

    plot_interval = 5.0

    def __init__(self) -> None:
        super().__init__()
        from IPython.display import HTML, Image, display

        self._html, self._image, self._display = HTML, Image, display
        self._train: list[tuple[float, float, float]] = []
        self._test: list[tuple[int, float]] = []
        self._plotted = 0.0
        self._plot = self._line = None

    def start(self, config: TrainConfig, start_epoch: int, steps: int, test_images: int) -> None:
        super().start(config, start_epoch, steps, test_images)
        if steps:  # a run that trains: its plot, empty until the first points
            self._plot = self._display(self._image(data=self._png()), display_id=True)
        self._line = self._display(self._html(self._text(f"{config.model}: {self.stage}")), display_id=True)

    def _png(self) -> bytes:
        from .figures import figure_png, live_curves_figure

        title = f"{self.config.model}, {self.config.recipe} recipe"
        return figure_png(live_curves_figure(self._train, self._test, self.config.epochs, title=title,
                                             scored_on=self.scored_on))

    def _text(self, text: str) -> str:
        return f"<pre style='margin: 0'>{html_text(text)}</pre>"

    def _redraw(self) -> None:
        self._plot.update(self._image(data=self._png()))
        self._plotted = time.perf_counter()

    def show_step(self, done: int, loss: float, acc: float, examples_per_sec: float, left: float | None) -> None:
        self._line.update(self._html(self._text(self.step_text(done, loss, acc, examples_per_sec, left))))
        self._train.append((self.epoch + done / self.steps, loss, acc))
        if time.perf_counter() - self._plotted >= self.plot_interval:
            self._redraw()

    def evaluating(self, done: int, total: int) -> None:
        if self.due(done == total):
            self._line.update(self._html(self._text(f"{self.stage}  scoring the {self.scored_on} set: batch "
                                                    f"{done}/{total}")))

    def epoch_done(self, row: dict) -> None:
        super().epoch_done(row)
        self._train.append((row["epoch"], row["train_loss"], row["train_acc"]))
        split, accuracy = epoch_score(row)
        self._test.append((row["epoch"], accuracy))
        self._redraw()
        self._line.update(self._html(self._text(
            f"epoch {row['epoch']}/{self.config.epochs}  loss {row['train_loss']:.4f}  train acc "
            f"{row['train_acc']:.4f}  {SHORT[split]} acc {accuracy:.4f}  {row['seconds']:.1f} s")))


class Forecast(Progress):
    """After the first steps of the first epoch, ``note`` once that the run will be long, if it will.

    The first step is a warm-up (kernel choice, allocation); the steps after it are timed for
    ``seconds`` (or to the end of the epoch), and evaluation is taken as a third of training per image.
    On a machine shared with other work the estimate is as good as the load is steady.
    """

    def __init__(self, note: Callable[[str], None], threshold: float = LONG_RUN_SECONDS, seconds: float = 3.0) -> None:
        self.note, self.threshold, self.seconds = note, threshold, seconds
        self._decided, self._warm = False, None

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        if self._decided:
            return
        if done == 1:
            loss_sum.item()  # waits for the device
            self._warm = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._warm
        if (done < 4 or elapsed < self.seconds) and done < self.steps:
            return
        loss_sum.item()
        step_seconds = (time.perf_counter() - self._warm) / (done - 1)
        self._decided = True
        config, epochs = self.config, self.config.epochs - self.epoch
        total = run_seconds(config, epochs, self.steps, self.test_images, step_seconds)
        if total > self.threshold:
            epoch = run_seconds(config, 1, self.steps, self.test_images, step_seconds)
            self.note(f"this run will take about {format_seconds(total)} ({format_seconds(epoch)} an epoch, "
                      f"{epochs} epochs); quicker: {shorter(config) or 'fewer ' + option('epochs')}")


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


class TensorBoard(Progress):
    """Scalars for TensorBoard in ``log_dir``: each epoch's loss, accuracies, learning rate and speed
    (x axis: the epoch), and the running training loss every few seconds (x axis: the step).

    The event file is created when training starts, after every check of the run has passed, and
    ``note`` says where it is.
    """

    def __init__(self, log_dir: str | Path, note: Callable[[str], None] = _note) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(f"{option('tensorboard')} needs the tensorboard package: pip install "
                              "'convzoo[tensorboard]'", field="tensorboard") from None
        self.log_dir = Path(log_dir)
        self._open = lambda: SummaryWriter(str(self.log_dir))
        self._writer = None
        self._note = note
        self._logged = 0.0

    def start(self, config: TrainConfig, start_epoch: int, steps: int, test_images: int) -> None:
        super().start(config, start_epoch, steps, test_images)
        self._writer = self._open()
        self._note(f"TensorBoard scalars go to {self.log_dir} (see them with: tensorboard --logdir "
                   f"{shlex.quote(str(self.log_dir.parent))})")

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        now = time.perf_counter()
        if now - self._logged >= 5.0 or done == self.steps:
            self._logged = now
            self._writer.add_scalar("train/running_loss", loss_sum.item() / seen, self.epoch * self.steps + done)

    def epoch_done(self, row: dict) -> None:
        super().epoch_done(row)
        for name in ("train_loss", "train_acc", "test_acc", "val_acc", "lr", "examples_per_sec"):
            if name in row:
                self._writer.add_scalar(f"epoch/{name}", row[name], row["epoch"])
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Jupyter, VS Code, Colab): IPython's ZMQ shell is running."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def progress_for(kind: bool | str | Progress | None = None, *, note: Callable[[str], None] = _note,
                 tensorboard: str | Path | None = None) -> Progress:
    """The view ``fit`` shows (``kind``), with the long-run ``Forecast`` and TensorBoard when asked.

    ``None``, ``True`` or ``"auto"``: a notebook's view in Jupyter, else the bar if stderr is a
    terminal, else log lines. ``"bar"``, ``"log"``, ``"notebook"`` choose one; ``False`` or
    ``"none"`` show nothing (no forecast either). A ``Progress`` is used as it is.
    """
    if isinstance(kind, Progress):
        return kind
    if kind in (None, True, "auto"):
        kind = "notebook" if in_notebook() else "bar" if sys.stderr.isatty() else "log"
    views: dict[str, Callable[[], Progress]] = {"bar": TerminalBar, "log": LogLines, "notebook": NotebookView,
                                                "none": Progress}
    if kind is False:
        kind = "none"
    if kind not in views:
        raise ValueError(f"progress must be True, False, None, a Progress or one of {', '.join(views)}; got {kind!r}")
    chosen = [views[kind]()]
    if kind != "none":
        chosen.append(Forecast(note))
    if tensorboard is not None:
        chosen.append(TensorBoard(tensorboard, note))
    return chosen[0] if len(chosen) == 1 else Several(chosen)
