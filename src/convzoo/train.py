"""Training a run: ``fit`` = set up, train one epoch at a time, finish.

    set_up            the device, the model and its weights, the batches, the optimizer, the step,
                      the run directory (or the resumed run's state)
    train_one_epoch   every batch through ``TrainStep``, then the test set (or the validation split the
                      run holds out, ``val_fraction``) through ``evaluate``
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
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .checkpoint import SHORT, epoch_score, load_state, save_model, snapshot_state
from .config import TrainConfig, recipe  # noqa: F401  (recipe: the README's `from convzoo.train import recipe, fit`)
from .data import Batches, DataSet
from .errors import ConfigError, DataError, RunFileError, RunInterrupted, first_line
from .evaluate import Evaluation, evaluate, run_data, splits, test_split, validation_split
from .monitor import STALL_EPOCHS, LossWatch, divergence_check_interval, fell_back, finished_at_chance, not_learning
from .network import build_model
from .optim import lr_factor, make_optimizer
from .progress import Progress, progress_for
from .resources import check_fits
from .run import EvaluatedRun, Run
from .rundir import (
    CHECKPOINT,
    METRICS,
    MODEL,
    RESULT,
    EpochWriter,
    RunDirectory,
    read_run_config,
    resume_hint,
    update_config,
    write_config,
    write_metrics,
    write_result,
)
from .runtime import compute_settings, resolve_device, thread_choice, uses_cuda_graphs
from .signals import interrupt_on_signals
from .step import TrainStep
from .terms import option, setting


@dataclass
class Training:
    """What ``set_up`` prepares and the epochs use: one training run in progress."""

    config: TrainConfig
    run_dir: RunDirectory
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
    ran_with: str = ""  # the threads and the machine's load (``runtime.thread_choice``), recorded in result.json
    classes: tuple[str, ...] = ()  # the data's class names, in label order
    val_batches: Batches | None = None  # the validation split each epoch is scored on (``val_fraction``)

    def __post_init__(self) -> None:
        if self.watch is None:
            self.watch = LossWatch(self.config, lambda **changes: resume_hint(self.run_dir.path, **changes),
                                   num_classes=len(self.classes) or 10)

    @property
    def main(self) -> bool:
        return self.rank is None or self.rank.is_main

    @property
    def epoch_batches(self) -> Batches:
        """What each epoch is scored on: the validation split the run holds out, else the test set."""
        return self.test_batches if self.val_batches is None else self.val_batches


def _quiet(_message: str) -> None:
    pass


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def fit(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | str | Progress | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    command: str | None = None,
) -> Run:
    """Train ``config`` into the run directory ``run_dir`` (or continue it with ``resume``); the trained ``Run``.

    Every mistake in the options, the data or the checkpoint is raised before anything is
    written. A NaN or infinite loss raises ``DivergenceError``; SIGINT and SIGTERM raise
    ``RunInterrupted``. Either way the run directory keeps the checkpoint of the last completed
    epoch (every file is written atomically), and ``resume`` continues from it. ``log`` gets the
    epoch lines; ``warn`` the warning that a run is not learning (default: a ``warning:`` line on
    stderr); ``progress`` how the run shows itself as it trains (``convzoo.progress.progress_for``:
    in a notebook, a live plot); ``command`` is recorded in ``config.json`` (default: ``sys.argv``).

    Under ``torchrun`` every rank calls this (``convzoo.distributed``): ``config.batch_size`` is
    the global batch, each rank trains on its share of it, metrics are summed over the ranks,
    and only rank 0 writes files, logs and shows progress.
    """
    config.validate()
    rank = distributed.detect()
    main = rank is None or rank.is_main
    log, warn = (log, warn or _warn) if main else (_quiet, _quiet)
    threads, why = thread_choice(config)  # from the machine's load, unless config.threads says
    log(why)
    if config.deterministic:  # the count is part of what makes a resumed run end bitwise as an uninterrupted one
        config = replace(config, threads=threads)
    directory = RunDirectory(run_dir, writer=main)  # held by rank 0 from its creation (or the resume) to the end
    training = None
    # The signals stay caught until the failure is told: torchrun's SIGTERM to the survivors of a failed rank
    # becomes an interruption that says what the run directory keeps, never a silent death.
    with interrupt_on_signals() as hold_signals:
        try:
            with compute_settings(config, threads), directory, EpochWriter() as writer, \
                    closing(progress_for(progress) if main else Progress()) as view:
                training = set_up(config, directory, rank, resume=resume, overwrite=overwrite, command=command,
                                  log=log, hold_signals=hold_signals)
                training.ran_with = why
                view.start(config, training.start_epoch, len(training.train_batches),
                           training.epoch_batches.num_examples)
                test = train_epochs(training, writer, log=log, warn=warn, view=view)
                # The other ranks wait for rank 0's files, so that the job fails on every rank if writing
                # them fails, and no rank leaves the process group while another still uses it.
                with distributed.together("writing the final files"):
                    writer.wait()
                    return finish(training, test)
        except KeyboardInterrupt as exc:  # the directory is already cleaned up: say what it keeps
            hint = resume_hint(directory.path if directory.opened else None)
            raise RunInterrupted(f"{str(exc) or 'interrupted'}; {hint}", getattr(exc, "exit_code", 130)) from None
        except RuntimeError as exc:
            if rank is None or not distributed.is_peer_failure(exc):
                raise
            raise distributed.PeerFailure(f"lost contact with the other ranks ({first_line(exc)}); "
                                          "another rank probably failed (see its error)") from None
        finally:
            if rank is not None:
                # DDP's reducer keeps the process group alive; freed at interpreter exit instead of
                # here, gloo's threads can abort the process (SIGABRT, "terminate called ...").
                training = None
                gc.collect()
            distributed.destroy()


def train_epochs(training: Training, writer: EpochWriter, *, log: Callable[[str], None], warn: Callable[[str], None],
                 view: Progress) -> Evaluation:
    """The epochs from ``training.start_epoch`` to the last, each checkpointed while the next trains; the last
    evaluation."""
    config, test, classes = training.config, None, len(training.classes) or 10
    for epoch in range(training.start_epoch, config.epochs):
        row, test = train_one_epoch(training, epoch, view)
        split, accuracy = epoch_score(row)
        training.history.append(row)
        if training.main:  # copied now, written while the next epoch trains
            snapshot = snapshot_state(training.model, training.optimizer, epoch=epoch + 1, history=training.history)
            writer.submit(training.run_dir.path, snapshot, training.history)
        log(f"epoch {row['epoch']:>3}/{config.epochs}  loss {row['train_loss']:.4f}  train acc "
            f"{row['train_acc']:.4f}  {SHORT[split]} acc {accuracy:.4f}  {row['seconds']:.1f} s  "
            f"{row['examples_per_sec']:,.0f} ex/s")
        view.epoch_done(row)
        if len(training.history) == STALL_EPOCHS and (message := not_learning(training.history, config, classes)):
            warn(message)
        elif message := fell_back(training.history, config, classes):
            warn(message)
    if test is None or training.val_batches is not None:  # resumed after the last epoch, or a validation split
        test = evaluate(training.eval_model, training.test_batches, config.amp, config.tta, classes=classes)
        if training.val_batches is not None:
            log(f"the test set, scored once: accuracy {test.accuracy:.4f} on {test.count:,} images (the epochs were "
                f"scored on {training.val_batches.num_examples:,} validation images)")
    if message := finished_at_chance(training.history, config, classes):  # never silently, whatever was said before
        warn(message)
        training.warnings.append(message)
    return test


def set_up(config: TrainConfig, run_dir: RunDirectory, rank: distributed.Rank | None, *, resume: bool,
           overwrite: bool, command: str | None, log: Callable[[str], None], hold_signals: Callable) -> Training:
    """Everything a run needs before its first step, checked before the run directory is created."""
    device = _device(config, rank)
    graphs = uses_cuda_graphs(config, device, distributed=rank is not None)
    with distributed.together("setting up the run"):
        run_dir.resume() if resume else run_dir.check(overwrite)
        data = run_data(config, warn=_warn if rank is None or rank.is_main else None)
        check_fits(replace(config, batch_size=max(config.batch_size // _world(rank), 1)), device, data=data)
        if resume:
            _check_same_data(run_dir.path, data)
        model = build_model(config, device, num_classes=data.num_classes, in_channels=data.channels)
        train_batches, test_batches, val_batches = load_batches(config, device, rank, data=data,
                                                                min_last=2 if has_batch_norm(model) else 1)
        optimizer = make_optimizer(model, config, device=device, graphable=graphs)
        start_epoch, history = _resumed_state(config, run_dir, model, optimizer, log) if resume else (0, [])
    with distributed.together("creating the run directory"), hold_signals():
        _record(config, run_dir, model, device, command, resume=resume, overwrite=overwrite, history=history,
                data=data.describe())
    step_model, eval_model = _wrap(model, config, device, rank)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = TrainStep(step_model, loss_fn, optimizer, device, amp=config.amp, cuda_graph=graphs,
                     batch_size=config.batch_size)
    return Training(config, run_dir, rank, device, model, eval_model, optimizer, step, train_batches, test_batches,
                    start_epoch, history, classes=data.classes, val_batches=val_batches)


def _check_same_data(path: Path, data: DataSet) -> None:
    """Refuse to resume a run on data of other classes or channels than it was trained on (a folder changed)."""
    recorded = read_run_config(path)["data"]
    if tuple(recorded["classes"]) != data.classes or recorded["channels"] != data.channels:
        raise DataError(f"{path} was trained on {len(recorded['classes'])} classes of {recorded['channels']}-channel "
                        f"images ({', '.join(recorded['classes'][:5])}...); its data now has {data.num_classes} "
                        f"classes of {data.channels}-channel images ({', '.join(data.classes[:5])}...): the run "
                        "continues only on the data it started with", field="data")


def _world(rank: distributed.Rank | None) -> int:
    return 1 if rank is None else rank.world_size


def _device(config: TrainConfig, rank: distributed.Rank | None) -> torch.device:
    """The run's device; under torchrun, this rank's, once the process group is joined."""
    device = resolve_device(config.device)
    if rank is None:
        return device
    if config.cuda_graphs and device.type == "cuda":
        raise ConfigError(f"{option('cuda_graphs')} trains in one process; leave it out under torchrun",
                          field="cuda_graphs")
    device = distributed.init(rank, device)
    distributed.agree(asdict(config), local=("threads", "data_dir"))  # a node's own cores and paths
    return device


def _resumed_state(config: TrainConfig, run_dir: RunDirectory, model: nn.Module, optimizer: torch.optim.Optimizer,
                   log: Callable[[str], None]) -> tuple[int, list[dict]]:
    """The completed epochs and metrics of the run being resumed, its weights and optimizer state restored."""
    path = run_dir.path
    if not (path / CHECKPOINT).is_file():
        if (path / MODEL).is_file() or (path / RESULT).is_file() or (path / METRICS).is_file():
            raise RunFileError(f"{path} has no checkpoint.safetensors to continue from, though it completed epochs "
                               f"(the file was deleted); {setting('overwrite', True)} trains it again from the start",
                               field="resume")
        log(f"resuming {path}: no epoch was completed, so it starts from the first")
        return 0, []
    start_epoch, history = load_state(path / CHECKPOINT, model, optimizer)
    if start_epoch > config.epochs:
        raise ConfigError(f"{path} has completed {start_epoch} epochs; {setting('epochs', config.epochs)} cannot "
                          "shorten it", field="epochs")
    log(f"resuming {path} after epoch {start_epoch}")
    return start_epoch, history


def _record(config: TrainConfig, run_dir: RunDirectory, model: nn.Module, device: torch.device, command: str | None,
            *, resume: bool, overwrite: bool, history: list[dict], data: dict | None = None) -> None:
    """Create the run directory with its config.json, or record a resumed run's config (a new epochs, lr)."""
    if resume:
        if run_dir.writer:
            update_config(run_dir.path, config)
            # after a kill -9 between the checkpoint and metrics.jsonl, the metrics lag by an epoch
            write_metrics(run_dir.path, history, unless_equal=True)
        return
    run_dir.create(overwrite)
    if run_dir.writer:
        write_config(run_dir.path, config, model, device, command, data)


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
                 min_last: int = 1, data: DataSet | None = None) -> tuple[Batches, Batches, Batches | None]:
    """The training batches (this rank's share of each global batch), this rank's shard of the test set, and of
    the validation split held out of the training split (None unless ``config.val_fraction``).

    ``min_last``: the fewest images per process a training batch may hold; a last partial batch
    with fewer is dropped (every epoch draws another order, so no image is left out for good).
    Batch norm needs 2: with one image its statistics are undefined. ``data``: the run's data set
    (default: read, ``evaluate.run_data``).
    """
    train_x, train_y, test_x, test_y = splits(config, data if data is not None else run_data(config))
    val = None
    if config.val_fraction:
        train_x, train_y, *val = validation_split(config, train_x, train_y)
        if len(val[1]) == 0:
            raise ConfigError(f"{setting('val_fraction', config.val_fraction)} holds out no image of the "
                              f"{len(train_y):,} training images: raise it", field="val_fraction")
    world = _world(rank)
    if config.batch_size % world:
        raise ConfigError(f"{setting('batch_size', config.batch_size)} is the global batch: it must divide by the "
                          f"{world} processes", field="batch_size")
    if len(test_x) == 0:
        raise DataError("the test split has no images")
    if len(train_x) < world:
        raise DataError(f"the training split has {len(train_x)} images, fewer than the {world} process(es) training")
    if min(len(train_x), config.batch_size) < min_last * world:
        name = "batch_size" if config.batch_size < len(train_x) else "limit_train"
        raise ConfigError(f"{setting(name, min(len(train_x), config.batch_size))}: {config.model} uses batch norm, "
                          f"which needs at least {min_last} images per training batch in each of the {world} "
                          "process(es)", field=name)
    train = Batches(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed, device=device,
                    resize=config.input_size, augment=config.augment, rank=0 if rank is None else rank.rank,
                    world_size=world, channels_last=config.channels_last, min_last=min_last)
    val_batches = None if val is None else _scored(config, *val, device, rank)
    return train, _scored(config, test_x, test_y, device, rank), val_batches


def _scored(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
            rank: distributed.Rank | None) -> Batches:
    """This rank's shard of a split that is scored (the test set, the validation split), in evaluation batches."""
    part = distributed.shard(len(labels), rank)
    return Batches(images[part], labels[part], config.eval_batch_size, device=device, resize=config.input_size,
                   channels_last=config.channels_last)


def train_one_epoch(training: Training, epoch: int, view: Progress) -> tuple[dict, Evaluation]:
    """Train ``training`` for epoch ``epoch`` (from 0), then evaluate it (on the test set, or the validation split):
    the epoch's metrics row and the evaluation."""
    config, step, batches = training.config, training.step, training.train_batches
    batches.set_epoch(epoch)
    if training.rank is not None:  # dropout masks: reproducible per rank and epoch, different across ranks
        torch.manual_seed(hash((config.seed, epoch, training.rank.rank)))
    training.model.train()
    step.reset()
    steps, seen, lr = len(batches), 0, config.lr
    check_every = divergence_check_interval(training.device)
    started = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        lr = config.lr * lr_factor(config.schedule, epoch * steps + i, steps * config.epochs)
        step.set_lr(lr)
        step(x, y)
        seen += len(y)
        if (i + 1) % check_every == 0 or i + 1 == steps:
            training.watch.check(step.loss_sum, seen, (epoch, i, steps), lr)
        view.step(i + 1, seen, step.loss_sum, step.correct)
    seen_all = torch.tensor(seen, device=training.device)
    distributed.all_reduce_sum(step.loss_sum, step.correct, seen_all)
    seen = int(seen_all)
    train_loss, train_acc = step.loss_sum.item() / seen, step.correct.item() / seen  # one sync per epoch
    seconds = time.perf_counter() - started
    evaluated = time.perf_counter()
    scored = evaluate(training.eval_model, training.epoch_batches, config.amp, config.tta, progress=view.evaluating,
                      classes=len(training.classes) or None)
    row = {
        "epoch": epoch + 1, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
        "test_acc" if training.val_batches is None else "val_acc": round(scored.accuracy, 6), "lr": lr,
        "seconds": round(seconds, 3),
        "examples_per_sec": round(seen / seconds, 1), "eval_seconds": round(time.perf_counter() - evaluated, 3),
    }
    return row, scored


def finish(training: Training, test: Evaluation) -> Run:
    """Write the final weights, ``result.json`` and the report (with its pictures) of a completed run."""
    path = training.run_dir.path
    run = Run(path, training.config, training.model.eval() if training.main else None, training.device,
              training.history, training.warnings, test)
    if not training.main:
        return run
    from .report import write_report  # matplotlib only once a run is done

    save_model(path / MODEL, training.model)
    write_result(path, {**run.to_json(), "test_images": test.count, "ran_with": training.ran_with},
                 dict(zip(training.classes, (round(a, 4) for a in test.per_class_accuracy))))
    if training.rank is None:  # the test images training held; a rank of a torchrun job holds only its shard
        images, labels = training.test_batches.images.cpu(), training.test_batches.labels.cpu()
        images = images[:, 0] if images.shape[1] == 1 else images.contiguous()
    else:
        images, labels = test_split(training.config)
    write_report(EvaluatedRun(run, test, images, labels), pictures=True)
    return run
