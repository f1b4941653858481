"""Training a run: ``fit`` = set up, train one epoch at a time, finish.

    set_up            the device, the model and its weights, the batches, the optimizer, the step,
                      the run directory (or the resumed run's state)
    train_one_epoch   every batch through ``TrainStep``, then the test set through ``evaluate``
    finish            the final weights, ``result.json`` and the report

Speed by design: both splits live on the training device as uint8 tensors, batches are cut by
index and converted/resized there (``convzoo.data.Batches``), metrics are accumulated on the
device and read once per epoch, and on CUDA each step replays from a CUDA graph
(``convzoo.step``). The checkpoint of each epoch is written while the next one trains.

The run directory's files are described in ``convzoo.rundir``; the recipes in ``convzoo.config``.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import distributed, rundir
from .checkpoint import load_state, save_model, snapshot_state, write_state
from .config import TrainConfig, recipe  # noqa: F401  (recipe: the README's `from convzoo.train import recipe, fit`)
from .data import CLASSES, Batches, load_split
from .errors import ConfigError, DataError, RunInterrupted, first_line
from .evaluate import Evaluation, evaluate
from .fileio import write_json, write_text
from .models import create_model, init_weights
from .monitor import (
    STALL_EPOCHS,
    LossWatch,
    at_chance,
    divergence_check_interval,
    fell_back,
    finished_at_chance,
    not_learning,
)
from .optim import lr_factor, make_optimizer
from .progress import Progress, progress_for
from .resources import check_fits
from .runtime import backend_settings, resolve_device, uses_cuda_graphs
from .signals import interrupt_on_signals
from .step import TrainStep


@dataclass
class RunResult:
    run_dir: Path
    test_acc: float
    train_seconds: float
    epochs: int
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model (on rank 0 of a torchrun job)
    warnings: list[str] = field(default_factory=list)  # e.g. that the run finished at chance

    @property
    def learned(self) -> bool:
        """Whether the final test accuracy is above chance."""
        return not at_chance(self.test_acc)

    def to_json(self) -> dict:
        return {"run_dir": str(self.run_dir), "test_acc": self.test_acc,
                "train_seconds": round(self.train_seconds, 3), "epochs": self.epochs, "learned": self.learned,
                "warnings": self.warnings}


@dataclass
class Run:
    """What ``set_up`` prepares and the epochs use: one training run in progress."""

    config: TrainConfig
    out: Path
    rank: distributed.Rank | None
    device: torch.device
    model: nn.Module  # the network itself: its weights are the run's
    eval_model: nn.Module  # what evaluation calls (compiled in one process; never DDP's wrapper)
    optimizer: torch.optim.Optimizer
    step: TrainStep  # trains DDP's wrapper under torchrun, the compiled model with --compile
    train_batches: Batches
    test_batches: Batches
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    watch: LossWatch | None = None  # stops the run when its loss diverges
    warnings: list[str] = field(default_factory=list)  # what the run's result records besides its numbers

    def __post_init__(self) -> None:
        if self.watch is None:
            self.watch = LossWatch(self.config, lambda: rundir.resume_hint(self.out))

    @property
    def main(self) -> bool:
        return self.rank is None or self.rank.is_main


class _EpochWriter:
    """Writes an epoch's checkpoint, then metrics.jsonl, on one background thread while the next epoch trains.

    One write at a time: ``submit`` first waits for the previous one. Each file is written
    atomically and the checkpoint first, so after any crash metrics.jsonl is at most one epoch
    behind the checkpoint (what ``fit(resume=True)`` repairs). A failed write is raised by the
    next ``submit`` or ``wait``; ``close`` only waits (the run is already failing).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convzoo-checkpoint")
        self._pending: Future | None = None

    def submit(self, run_dir: Path, snapshot: tuple, history: list[dict]) -> None:
        self.wait()
        text = rundir.metrics_text(history)
        self._pending = self._pool.submit(_write_epoch, run_dir, snapshot, text)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        while pending is not None:
            try:  # in slices: SIGINT/SIGTERM stay deliverable to the training thread
                pending.result(timeout=0.1)
                return
            except FutureTimeout:
                continue

    def close(self) -> None:
        try:
            self.wait()
        except Exception:  # noqa: BLE001  (the run is already failing; its own error is the one to report)
            pass
        self._pool.shutdown(wait=True)


def _write_epoch(run_dir: Path, snapshot: tuple, metrics: str) -> None:
    write_state(run_dir / "checkpoint.safetensors", snapshot)
    write_text(run_dir / "metrics.jsonl", metrics)


def _quiet(_message: str) -> None:
    pass


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def fit(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | str | Progress | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    command: str | None = None,
) -> RunResult:
    """Train ``config`` into the run directory ``out`` (or continue it with ``resume``).

    Every mistake in the options, the data or the checkpoint is raised before anything is
    written. A NaN or infinite loss raises ``DivergenceError``; SIGINT and SIGTERM raise
    ``RunInterrupted``. Either way the run directory keeps the checkpoint of the last completed
    epoch (every file is written atomically), and ``resume`` continues from it. ``warn`` gets
    the warning that a run is not learning (default: a ``warning:`` line on stderr); ``progress``
    how the run shows itself as it trains (``convzoo.progress.progress_for``: in a notebook, a live plot).

    Under ``torchrun`` every rank calls this (``convzoo.distributed``): ``config.batch_size`` is
    the global batch, each rank trains on its share of it, metrics are summed over the ranks,
    and only rank 0 writes files, logs and shows progress.
    """
    config.validate()
    if config.deterministic and config.threads is None:
        config = replace(config, threads=torch.get_num_threads())
    rank = distributed.detect()
    main = rank is None or rank.is_main
    log, warn = (log, warn or _warn) if main else (_quiet, _quiet)
    out = Path(out)
    # opened: ``out`` is this run's directory (what a failure message may point to); created: this call made it
    state = {"opened": resume, "created": False}
    writer = _EpochWriter()
    lock = rundir.RunLock(out)  # held by rank 0 from the run directory's creation (or the resume) to the end

    def abandon() -> None:
        """After a failure: wait for the last checkpoint; remove a directory this call made that holds no epoch."""
        writer.close()
        if main and state["created"] and not (out / "checkpoint.safetensors").exists():
            rundir.remove_run_dir(out, lock)
            state["opened"] = False

    run, view = None, progress_for(progress) if main else Progress()
    with interrupt_on_signals() as hold_signals, backend_settings(config):
        try:
            run = set_up(config, out, rank, resume=resume, overwrite=overwrite, command=command, log=log,
                         hold_signals=hold_signals, state=state, lock=lock)
            view.start(config, run.start_epoch, len(run.train_batches), run.test_batches.num_examples)
            test = train_epochs(run, writer, log=log, warn=warn, view=view)
            # The other ranks wait for rank 0's files, so that the job fails on every rank if writing
            # them fails, and no rank leaves the process group while another still uses it.
            with distributed.together("writing the final files"):
                if main:
                    writer.wait()
                    return finish(run, test)
            return RunResult(out, test.accuracy, rundir.train_seconds(run.history), len(run.history), run.history)
        except KeyboardInterrupt as exc:
            abandon()
            raise RunInterrupted(f"{exc or 'interrupted'}; {rundir.resume_hint(out if state['opened'] else None)}",
                                 getattr(exc, "exit_code", 130)) from None
        except RuntimeError as exc:
            abandon()
            if rank is None or not distributed.is_peer_failure(exc):
                raise
            raise distributed.PeerFailure(f"lost contact with the other ranks ({first_line(exc)}); "
                                          "another rank probably failed (see its error)") from None
        except BaseException:
            abandon()
            raise
        finally:
            view.close()
            writer.close()  # an interrupted or failed run still leaves its last epoch's files complete
            lock.release()
            if rank is not None:
                # DDP's reducer keeps the process group alive; freed at interpreter exit instead of
                # here, gloo's threads can abort the process (SIGABRT, "terminate called ...").
                run = None
                gc.collect()
            distributed.destroy()


def train_epochs(run: Run, writer: _EpochWriter, *, log: Callable[[str], None], warn: Callable[[str], None],
                 view: Progress) -> Evaluation:
    """The epochs from ``run.start_epoch`` to the last, each checkpointed while the next trains; the last evaluation."""
    config, test = run.config, None
    for epoch in range(run.start_epoch, config.epochs):
        row, test = train_one_epoch(run, epoch, view)
        run.history.append(row)
        if run.main:  # copied now, written while the next epoch trains
            writer.submit(run.out, snapshot_state(run.model, run.optimizer, epoch=epoch + 1, history=run.history),
                          run.history)
        log(f"epoch {row['epoch']:>3}/{config.epochs}  loss {row['train_loss']:.4f}  train acc "
            f"{row['train_acc']:.4f}  test acc {test.accuracy:.4f}  {row['seconds']:.1f} s  "
            f"{row['examples_per_sec']:,.0f} ex/s")
        view.epoch_done(row)
        if len(run.history) == STALL_EPOCHS and (message := not_learning(run.history, config)):
            warn(message)
        elif message := fell_back(run.history, config):
            warn(message)
    if test is None:  # resumed after the last epoch: only the final files were missing
        test = evaluate(run.eval_model, run.test_batches, config.amp, config.tta)
    if message := finished_at_chance(run.history, config):  # never silently, whatever was said before
        warn(message)
        run.warnings.append(message)
    return test


def set_up(config: TrainConfig, out: Path, rank: distributed.Rank | None, *, resume: bool, overwrite: bool,
           command: str | None, log: Callable[[str], None], hold_signals: Callable, state: dict[str, bool],
           lock: rundir.RunLock) -> Run:
    """Everything a run needs before its first step, checked before the run directory is touched."""
    main = rank is None or rank.is_main
    device = resolve_device(config.device)
    if rank is not None and config.cuda_graphs and device.type == "cuda":
        raise ConfigError("--cuda-graphs trains in one process; leave it out under torchrun")
    graphs = uses_cuda_graphs(config, device, distributed=rank is not None)
    if rank is not None:
        device = distributed.init(rank, device)
    with distributed.together("setting up the run"):
        world = 1 if rank is None else rank.world_size
        check_fits(replace(config, batch_size=max(config.batch_size // world, 1)), device)
        if main and not resume:
            rundir.check_run_dir(out, overwrite)
        if main and resume:  # no other process may write while this one reads the run and goes on with it
            rundir.read_run_config(out)
            lock.acquire()
            rundir.remove_temporary_files(out)
        torch.manual_seed(config.seed)
        model = create_model(config.model, backend=config.backend, input_size=config.resize)
        init_weights(model, config.init)
        train_batches, test_batches = load_batches(config, device, rank, min_last=2 if has_batch_norm(model) else 1)
        model.to(device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, config, device=device, graphable=graphs)
        start_epoch, history = 0, []
        checkpoint = out / "checkpoint.safetensors"
        if resume and checkpoint.is_file():
            start_epoch, history = load_state(checkpoint, model, optimizer)
            if start_epoch > config.epochs:
                raise ConfigError(f"{out} has completed {start_epoch} epochs; --epochs {config.epochs} cannot "
                                  "shorten it")
            log(f"resuming {out} after epoch {start_epoch}")
    with distributed.together("creating the run directory"), hold_signals():
        if main:
            state["created"] = _open_run_dir(out, config, model, device, command, resume=resume, overwrite=overwrite,
                                             lock=lock)
            state["opened"] = True
            if resume:  # after a kill -9 between the checkpoint and metrics.jsonl, the metrics lag by an epoch
                rundir.write_metrics(out, history)
    step_model, eval_model = _wrap(model, config, device, rank)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = TrainStep(step_model, loss_fn, optimizer, device, amp=config.amp, cuda_graph=graphs,
                     batch_size=config.batch_size)
    return Run(config, out, rank, device, model, eval_model, optimizer, step, train_batches, test_batches,
               start_epoch, history)


def _open_run_dir(out: Path, config: TrainConfig, model: nn.Module, device: torch.device, command: str | None, *,
                  resume: bool, overwrite: bool, lock: rundir.RunLock) -> bool:
    """Create the run directory with its config.json, or update a resumed run's config (new --epochs, --lr);
    returns whether the directory was created."""
    if resume:
        rundir.update_config(out, config)
        return False
    created = rundir.create_run_dir(out, overwrite, lock)
    try:
        rundir.write_config(out, config, model, device, command)
    except BaseException:
        if created:
            rundir.remove_run_dir(out, lock)
        raise
    return created


def _wrap(model: nn.Module, config: TrainConfig, device: torch.device,
          rank: distributed.Rank | None) -> tuple[nn.Module, nn.Module]:
    """The module each training step calls (DDP's wrapper, compiled) and the one evaluation calls."""
    net = model
    if rank is not None:
        if device.type == "cuda" and rank.world_size > 1:
            # Batch statistics over the global batch, as in one process (SyncBatchNorm needs CUDA).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                  else None)
    step_model = torch.compile(net) if config.compile else net
    # DDP's forward may talk to the other ranks, whose test shards can differ in batch count.
    return step_model, step_model if rank is None else model


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` normalises by batch statistics, which a training batch of one image cannot give."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def load_batches(config: TrainConfig, device: torch.device, rank: distributed.Rank | None,
                 min_last: int = 1) -> tuple[Batches, Batches]:
    """The training batches (this rank's share of each global batch) and this rank's shard of the test set.

    ``min_last``: the fewest images per process a training batch may hold; a last partial batch
    with fewer is dropped (every epoch draws another order, so no image is left out for good).
    Batch norm needs 2: with one image its statistics are undefined.
    """
    train_x, train_y = load_split("train", config.data_dir)
    test_x, test_y = load_split("test", config.data_dir)
    train_x, train_y = train_x[: config.limit_train], train_y[: config.limit_train]
    test_x, test_y = test_x[: config.limit_test], test_y[: config.limit_test]
    world = 1 if rank is None else rank.world_size
    if config.batch_size % world:
        raise ConfigError(f"--batch-size {config.batch_size} is the global batch: it must divide by the "
                          f"{world} processes")
    if len(test_x) == 0:
        raise DataError("the test split has no images")
    if len(train_x) < world:
        raise DataError(f"the training split has {len(train_x)} images, fewer than the {world} process(es) training")
    if min(len(train_x), config.batch_size) < min_last * world:
        flag = "--batch-size" if config.batch_size < len(train_x) else "--limit-train"
        raise ConfigError(f"{flag} {min(len(train_x), config.batch_size)}: {config.model} uses batch norm, which needs "
                          f"at least {min_last} images per training batch in each of the {world} process(es)")
    train = Batches(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed, device=device,
                    resize=config.resize, augment=config.augment, rank=0 if rank is None else rank.rank,
                    world_size=world, channels_last=config.channels_last, min_last=min_last)
    part = distributed.shard(len(test_x), rank)
    test = Batches(test_x[part], test_y[part], config.eval_batch_size, device=device, resize=config.resize,
                   channels_last=config.channels_last)
    return train, test


def train_one_epoch(run: Run, epoch: int, view: Progress) -> tuple[dict, Evaluation]:
    """Train ``run`` for epoch ``epoch`` (from 0), then evaluate it: the epoch's metrics row and the evaluation."""
    config, step, batches = run.config, run.step, run.train_batches
    batches.set_epoch(epoch)
    if run.rank is not None:  # dropout masks: reproducible per rank and epoch, different across ranks
        torch.manual_seed(hash((config.seed, epoch, run.rank.rank)))
    run.model.train()
    step.reset()
    steps, seen, lr = len(batches), 0, config.lr
    check_every = divergence_check_interval(run.device)
    started = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        lr = config.lr * lr_factor(config.schedule, epoch * steps + i, steps * config.epochs)
        step.set_lr(lr)
        step(x, y)
        seen += len(y)
        if (i + 1) % check_every == 0 or i + 1 == steps:
            run.watch.check(step.loss_sum, seen, (epoch, i, steps), lr)
        view.step(i + 1, seen, step.loss_sum, step.correct)
    seen_all = torch.tensor(seen, device=run.device)
    distributed.all_reduce_sum(step.loss_sum, step.correct, seen_all)
    seen = int(seen_all)
    train_loss, train_acc = step.loss_sum.item() / seen, step.correct.item() / seen  # one sync per epoch
    seconds = time.perf_counter() - started
    evaluated = time.perf_counter()
    test = evaluate(run.eval_model, run.test_batches, config.amp, config.tta, progress=view.evaluating)
    row = {
        "epoch": epoch + 1, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
        "test_acc": round(test.accuracy, 6), "lr": lr, "seconds": round(seconds, 3),
        "examples_per_sec": round(seen / seconds, 1), "eval_seconds": round(time.perf_counter() - evaluated, 3),
    }
    return row, test


def finish(run: Run, test: Evaluation) -> RunResult:
    """Write the final weights, ``result.json`` and the report (with its pictures) of a completed run."""
    from .report import write_report  # matplotlib only once a run is done

    save_model(run.out / "model.safetensors", run.model)
    result = RunResult(run.out, test.accuracy, rundir.train_seconds(run.history), len(run.history), run.history,
                       run.model, run.warnings)
    write_json(run.out / "result.json", {**result.to_json(), "per_class_accuracy": dict(
        zip(CLASSES, (round(a, 4) for a in test.per_class_accuracy)))})
    if run.rank is None:  # the test images training held; a rank of a torchrun job holds only its shard
        images, labels = run.test_batches.images[:, 0].cpu(), run.test_batches.labels.cpu()
    else:
        images, labels = rundir.evaluation_split(run.config)
    record = rundir.RunRecord(run.out, rundir.read_run_config(run.out), run.history, run.model, test, images, labels)
    write_report(record, pictures=True)
    return result
