"""Training recipes, the fit and evaluate loops, and run directories.

A run directory holds everything a run produced:

    config.json              resolved config, versions, device, command
    metrics.jsonl            one line per epoch
    checkpoint.safetensors   resume state after the last completed epoch (written every epoch)
    model.safetensors        final weights + the model's name and arguments
    curves.png, confusion.png, result.json

Speed by design: both splits live on the training device as uint8 tensors, batches are cut by
index and converted/resized there (``convzoo.data.Batches``), metrics are accumulated on the
device and read once per epoch, and on CUDA each step replays from a CUDA graph
(``convzoo.step``). The checkpoint of each epoch is written while the next one trains.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import __version__, distributed
from .checkpoint import FORMAT, load_state, refuse_pickle, save_model, saved_epoch, snapshot_state, write_state
from .data import CLASSES, Batches, load_split
from .errors import ConfigError, DataError, DivergenceError, RunInterrupted, first_line
from .fileio import write_json, write_text
from .models import create_model, get_model_spec
from .step import TrainStep, autocast

# The book's recipe per model (d2l-zh 2.0 `train_ch6`): (learning rate, batch size, input side).
# Plain SGD, cross-entropy, Xavier-uniform weights, 10 epochs, pixels / 255.
BOOK_RECIPES: dict[str, tuple[float, int, int]] = {
    "lenet": (0.9, 256, 28),
    "lenet_bn": (1.0, 256, 28),
    "alexnet": (0.01, 128, 224),
    "vgg11": (0.05, 128, 224),
    "vgg11_small": (0.05, 128, 224),
    "nin": (0.1, 128, 224),
    "googlenet": (0.1, 128, 96),
    "resnet18": (0.05, 256, 96),
}

# The modern recipe: SGD + Nesterov momentum 0.9, weight decay 5e-4, a one-cycle schedule, label
# smoothing 0.1, bfloat16 autocast, flip/crop augmentation, 10 epochs, PyTorch's initialisation;
# per model, what differs from that. Augmentation pays only in longer runs (lenet_modern's 4
# epochs end 1 point higher without it); VGG has no batch norm and, with PyTorch's default
# weights, stays at chance (measured at 64x64 on a GPU and 32x32 on the CPU): He init trains it.
FAST_RECIPES: dict[str, dict[str, object]] = {
    "lenet": {"lr": 0.1, "batch_size": 256, "resize": 28},
    "lenet_bn": {"lr": 0.2, "batch_size": 256, "resize": 28},
    "lenet_modern": {"lr": 0.2, "batch_size": 256, "resize": 28, "epochs": 4, "augment": False, "tta": False},
    "alexnet": {"lr": 0.02, "batch_size": 128, "resize": 96},
    "vgg11": {"lr": 0.02, "batch_size": 128, "resize": 96, "init": "kaiming"},
    "vgg11_small": {"lr": 0.03, "batch_size": 128, "resize": 96, "init": "kaiming"},
    "nin": {"lr": 0.05, "batch_size": 128, "resize": 96},
    "googlenet": {"lr": 0.05, "batch_size": 128, "resize": 96},
    "resnet18": {"lr": 0.1, "batch_size": 256, "resize": 64},
}

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "onecycle", "cosine")


@dataclass
class TrainConfig:
    """Every choice a run makes. ``recipe()`` fills it from a named recipe plus overrides."""

    model: str = "lenet"
    recipe: str = "d2l"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.9
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    label_smoothing: float = 0.0
    augment: bool = False
    tta: bool = False  # test-time augmentation: evaluate on each image and its mirror image, average the logits
    init: str = "xavier"  # "xavier" (the book), "kaiming" (He, for deep ReLU nets) or "default" (PyTorch's)
    resize: int = 28
    seed: int = 0
    device: str = "auto"
    backend: str = "torch"
    channels_last: bool = True  # NHWC activations: oneDNN's fast convolution path on CPU and GPU
    amp: bool = False  # bfloat16 autocast for the forward pass (weights and optimizer stay float32)
    compile: bool = False  # torch.compile the model (pays off only when a run is long enough)
    cuda_graphs: bool | None = None  # replay CUDA training steps from a CUDA graph (None: see uses_cuda_graphs)
    autotune: bool = True  # on CUDA, time cuDNN's algorithms on the first batch of each shape and keep the fastest
    limit_train: int | None = None
    limit_test: int | None = None
    data_dir: str | None = None
    eval_batch_size: int = 1000
    deterministic: bool = False  # deterministic kernels: a resumed run ends bitwise where an uninterrupted one does
    threads: int | None = None  # CPU threads (None: PyTorch's default); --deterministic records the count used

    def validate(self) -> None:
        get_model_spec(self.model)
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}"),
            (self.optimizer in OPTIMIZERS,
             f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (math.isfinite(self.momentum) and self.momentum >= 0, f"--momentum must be >= 0, got {self.momentum}"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.init in INITS, f"--init must be one of {', '.join(INITS)}, got {self.init!r}"),
            (self.resize >= 1, f"--resize must be a positive side length, got {self.resize}"),
            (self.limit_train is None or self.limit_train >= 1, f"--limit-train must be >= 1, got {self.limit_train}"),
            (self.limit_test is None or self.limit_test >= 1, f"--limit-test must be >= 1, got {self.limit_test}"),
            (self.eval_batch_size >= 1, f"eval batch size must be >= 1, got {self.eval_batch_size}"),
            (self.backend in ("torch", "scratch"), f"--backend must be torch or scratch, got {self.backend!r}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def recipe(model: str, name: str = "d2l", **overrides: object) -> TrainConfig:
    """The named recipe (``d2l`` or ``fast``) for ``model``; ``overrides`` that are not None win."""
    get_model_spec(model)
    if name == "d2l":
        lr, batch, size = BOOK_RECIPES.get(model, (0.05, 128, get_model_spec(model).input_size))
        config = TrainConfig(model=model, recipe=name, lr=lr, batch_size=batch, resize=size)
    elif name == "fast":
        per_model = FAST_RECIPES.get(model, {"lr": 0.05, "batch_size": 128, "resize": get_model_spec(model).input_size})
        common = {"epochs": 10, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.1,
                  "augment": True, "tta": True, "init": "default", "amp": True}
        config = TrainConfig(model=model, recipe=name, **{**common, **per_model})  # type: ignore[arg-type]
    else:
        raise ConfigError(f"--recipe must be d2l or fast, got {name!r}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown TrainConfig fields: {sorted(unknown)}")
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.validate()
    return config


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Learning-rate multiplier at ``step`` of ``total_steps``.

    A pure function of the step, so a resumed run continues the schedule exactly with no
    scheduler state to save. ``onecycle``: linear warm-up over the first 25 % from 0.1, then
    cosine annealing to 0.
    """
    if schedule == "constant":
        return 1.0
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    warmup = 0.25
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: MPS is not available on this machine (use --device cpu or auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return device


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type


INITS = ("xavier", "kaiming", "default")


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialise every Conv2d and Linear weight by ``scheme``; ``default`` keeps PyTorch's own.

    ``xavier``: the book's Xavier-uniform weights (biases kept). ``kaiming``: He-normal
    convolutions (fan-out, for ReLU), linear weights from N(0, 0.01), zero biases, as
    torchvision initialises VGG: it keeps the signal's scale through deep ReLU stacks without
    batch norm, where PyTorch's default shrinks it layer by layer until nothing trains.
    """
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(module.weight)
        elif scheme == "kaiming":
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def uses_cuda_graphs(config: TrainConfig, device: torch.device, *, distributed: bool = False) -> bool:
    """Whether training replays its steps from a CUDA graph (``convzoo.step``).

    ``config.cuda_graphs`` decides when set; by default (None) graphs are used on CUDA in a single
    process without ``--compile``. They cut a launch-bound network's step several times over
    (LeNet: 109k -> 610k examples/s on an H200) and change nothing measurable for the large ones;
    the price is the graph's own copy of a step's activations in GPU memory (``--no-cuda-graphs``
    frees it).
    """
    if device.type != "cuda":
        return False
    if config.cuda_graphs is not None:
        return config.cuda_graphs
    return not config.compile and not distributed


def make_optimizer(model: nn.Module, config: TrainConfig, *, device: torch.device | None = None,
                   graphable: bool = False) -> torch.optim.Optimizer:
    """The run's optimizer over ``model``'s parameters.

    On CUDA (``device``) the fused implementation: one kernel updates every parameter.
    ``graphable`` (CUDA only) also makes the learning rate a device tensor, so that a CUDA graph
    can capture the update and ``TrainStep.set_lr`` can change the rate between replays.
    """
    fused = device is not None and device.type == "cuda"
    lr: float | torch.Tensor = config.lr
    extra: dict = {"fused": True} if fused else {}
    if graphable and fused:
        lr = torch.tensor(config.lr, device=device)
        if config.optimizer == "adamw":
            extra["capturable"] = True
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay, **extra)
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=config.momentum > 0, **extra,
    )


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    confusion: np.ndarray  # rows: true class, columns: predicted
    predictions: torch.Tensor  # (N,) int64, on the CPU

    @property
    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(axis=1)
        return [float(self.confusion[i, i] / t) if t else float("nan") for i, t in enumerate(totals)]


def scores(model: nn.Module, x: torch.Tensor, amp: bool = False, tta: bool = False) -> torch.Tensor:
    """The logits of ``model`` for the batch ``x``; with ``tta``, the mean of those of ``x`` and its mirror image."""
    with autocast(x.device, amp):
        logits = model(x)
        if tta:
            logits = (logits.float() + model(x.flip(-1)).float()) / 2
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, amp: bool = False, tta: bool = False) -> Evaluation:
    """Accuracy, mean loss, confusion matrix and predictions of ``model`` over ``batches``.

    ``tta`` (test-time augmentation) scores each image by the mean of its logits and those of its
    left-right mirror image, the one transformation training with ``augment`` teaches the model to
    expect: it costs a second forward pass and usually gains a few tenths of a point.

    Under ``torch.distributed`` each rank passes its own contiguous shard of the test set
    (``convzoo.distributed.shard``): the counts and the loss are summed over ranks and the
    predictions gathered in order, so every rank gets the result for the whole set.
    """
    was_training = model.training
    model.eval()
    k = len(CLASSES)
    loss_sum = torch.zeros((), device=batches.device)
    confusion = torch.zeros(k * k, dtype=torch.int64, device=batches.device)
    predictions = [torch.zeros(0, dtype=torch.int64, device=batches.device)]
    for x, y in batches:
        logits = scores(model, x, amp, tta)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        pred = logits.argmax(dim=1)
        confusion += torch.bincount(y * k + pred, minlength=k * k)
        predictions.append(pred)
    model.train(was_training)
    distributed.all_reduce_sum(loss_sum, confusion)
    pred = distributed.all_gather_cat(torch.cat(predictions))
    confusion = confusion.view(k, k)
    n = max(len(pred), 1)
    return Evaluation(int(confusion.trace()) / n, float(loss_sum) / n, confusion.cpu().numpy(), pred.cpu())


def _versions() -> dict[str, str]:
    return {"convzoo": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def check_run_dir(out: str | Path, overwrite: bool = False) -> None:
    """Refuse ``out`` if it is a file, or a non-empty directory that ``overwrite`` may not replace."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already exists; use --resume {out} to continue it, --overwrite to replace it, "
                              "or another --out")
        if not (out / "config.json").is_file():
            raise ConfigError(f"refusing to overwrite {out}: it is not a convzoo run directory")


def prepare_run_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Create ``out``; an existing non-empty directory is refused unless ``overwrite`` (a run's only)."""
    check_run_dir(out, overwrite)
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_run_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory, checked for this format version."""
    if Path(run_dir).is_file():
        refuse_pickle(run_dir)
        raise ConfigError(f"{run_dir} is a file; give the run directory that holds config.json and model.safetensors")
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a convzoo run directory (no config.json)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ConfigError(f"{path} is of format {found!r}, this convzoo reads {FORMAT!r}")
    try:
        config = TrainConfig(**meta["config"])
        _check_types(config)
        config.validate()
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path} has an invalid training configuration ({exc})") from None
    meta["config"] = config
    return meta


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_types(config: TrainConfig) -> None:
    """A ``TypeError`` unless every field holds a value of its annotated type (a config.json may be edited)."""
    for f in fields(config):
        value, names = getattr(config, f.name), str(f.type).split(" | ")
        if not all(name in _TYPES or name == "None" for name in names):
            continue
        allowed = tuple(t for name in names for t in _TYPES.get(name, (type(None),)))
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise TypeError(f"{f.name} is {value!r}, expected {f.type}")


@dataclass
class RunResult:
    run_dir: Path
    test_acc: float
    train_seconds: float
    epochs: int
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"run_dir": str(self.run_dir), "test_acc": self.test_acc,
                "train_seconds": round(self.train_seconds, 3), "epochs": self.epochs}


def fit(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    command: str | None = None,
) -> RunResult:
    """Train ``config`` into the run directory ``out`` (or continue it with ``resume``).

    Every mistake in the options, the data or the checkpoint is raised before anything is
    written. A NaN or infinite loss raises ``DivergenceError``; SIGINT and SIGTERM raise
    ``RunInterrupted``. Either way the run directory keeps the checkpoint of the last completed
    epoch (every file is written atomically), and ``resume`` continues from it. ``warn`` gets
    the warning that a run is not learning (default: a ``warning:`` line on stderr).

    Under ``torchrun`` every rank calls this (``convzoo.distributed``): ``config.batch_size`` is
    the global batch, each rank trains on its share of it, metrics are summed over the ranks,
    and only rank 0 writes files, logs and shows progress.
    """
    config.validate()
    if config.deterministic and config.threads is None:
        config = replace(config, threads=torch.get_num_threads())
    rank = distributed.detect()
    main = rank is None or rank.is_main
    if not main:
        log = warn = _quiet
    warn = warn or _warn
    out = Path(out)
    opened = resume  # whether ``out`` is this run's directory (what an interruption message may point to)
    writer = _EpochWriter()
    with _interrupt_on_signals() as hold_signals, backend_settings(config):
        try:
            device = resolve_device(config.device)
            if rank is not None and config.cuda_graphs and device.type == "cuda":
                raise ConfigError("--cuda-graphs trains in one process; leave it out under torchrun")
            graphs = uses_cuda_graphs(config, device, distributed=rank is not None)
            if rank is not None:
                device = distributed.init(rank, device)
            with distributed.together("setting up the run"):
                if main and not resume:
                    check_run_dir(out, overwrite)
                torch.manual_seed(config.seed)
                model = create_model(config.model, backend=config.backend, input_size=config.resize)
                init_weights(model, config.init)
                train_batches, test_batches = _load_batches(config, device, rank)
                model.to(device)
                if config.channels_last:
                    model.to(memory_format=torch.channels_last)
                optimizer = make_optimizer(model, config, device=device, graphable=graphs)
                start_epoch, history = 0, []
                checkpoint = out / "checkpoint.safetensors"
                if resume and checkpoint.is_file():
                    start_epoch, history = load_state(checkpoint, model, optimizer)
                    if start_epoch > config.epochs:
                        raise ConfigError(f"{out} has completed {start_epoch} epochs; --epochs {config.epochs} "
                                          "cannot shorten it")
                    log(f"resuming {out} after epoch {start_epoch}")
            with distributed.together("creating the run directory"), hold_signals():
                if main:
                    _open_run_dir(out, config, model, device, command, resume=resume, overwrite=overwrite)
                    opened = True
                    # After a kill -9 between the checkpoint and metrics.jsonl, the metrics lag by an epoch.
                    metrics, metrics_path = "".join(json.dumps(r) + "\n" for r in history), out / "metrics.jsonl"
                    if resume and (not metrics_path.is_file() or metrics_path.read_text() != metrics):
                        write_text(metrics_path, metrics)

            net = model
            if rank is not None:
                if device.type == "cuda" and rank.world_size > 1:
                    # Batch statistics over the global batch, as in one process (SyncBatchNorm needs CUDA).
                    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                          else None)
            step_model = torch.compile(net) if config.compile else net
            # DDP's forward may talk to the other ranks, whose test shards can differ in batch count.
            eval_model = step_model if rank is None else model
            loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
            train_step = TrainStep(step_model, loss_fn, optimizer, device, amp=config.amp, cuda_graph=graphs,
                                   batch_size=config.batch_size)
            loss_sum, correct = train_step.loss_sum, train_step.correct  # the epoch's sums, on the device

            steps_per_epoch = len(train_batches)
            total_steps = steps_per_epoch * config.epochs
            check_every = divergence_check_interval(device)
            show = main and (sys.stderr.isatty() if progress is None else progress)
            test = None
            for epoch in range(start_epoch, config.epochs):
                train_batches.set_epoch(epoch)
                if rank is not None:  # dropout masks: reproducible per rank and epoch, different across ranks
                    torch.manual_seed(hash((config.seed, epoch, rank.rank)))
                model.train()
                train_step.reset()
                seen = 0
                started = time.perf_counter()
                with tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show,
                          leave=False, unit="batch", file=sys.stderr) as bar:
                    for i, (x, y) in enumerate(train_batches):
                        step = epoch * steps_per_epoch + i
                        lr = config.lr * lr_factor(config.schedule, step, total_steps)
                        train_step.set_lr(lr)
                        train_step(x, y)
                        seen += len(y)
                        if (i + 1) % check_every == 0 or i + 1 == steps_per_epoch:
                            _check_finite(loss_sum, config, out, epoch, i, steps_per_epoch, lr)
                        if show:
                            bar.update()
                            if step % 20 == 0:
                                elapsed = time.perf_counter() - started
                                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                                                acc=f"{correct.item() / seen:.3f}",
                                                ex_s=f"{seen / max(elapsed, 1e-9):,.0f}")
                seen_all = torch.tensor(seen, device=device)
                distributed.all_reduce_sum(loss_sum, correct, seen_all)
                seen = int(seen_all)
                train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen  # one sync per epoch
                seconds = time.perf_counter() - started
                evaluated = time.perf_counter()
                test = evaluate(eval_model, test_batches, config.amp, config.tta)
                row = {
                    "epoch": epoch + 1, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
                    "test_acc": round(test.accuracy, 6), "lr": lr, "seconds": round(seconds, 3),
                    "examples_per_sec": round(seen / seconds, 1),
                    "eval_seconds": round(time.perf_counter() - evaluated, 3),
                }
                history.append(row)
                if main:  # copied now, written while the next epoch trains
                    writer.submit(checkpoint, snapshot_state(model, optimizer, epoch=epoch + 1, history=history),
                                  out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
                log(f"epoch {row['epoch']:>3}/{config.epochs}  loss {train_loss:.4f}  train acc {train_acc:.4f}  "
                    f"test acc {test.accuracy:.4f}  {seconds:.1f} s  {row['examples_per_sec']:,.0f} ex/s")
                if len(history) == STALL_EPOCHS and (message := not_learning(history, config)):
                    warn(message)

            if test is None:  # resumed after the last epoch: only the final files were missing
                test = evaluate(eval_model, test_batches, config.amp, config.tta)
            # The other ranks wait for rank 0's files, so that the job fails on every rank if writing
            # them fails, and no rank leaves the process group while another still uses it.
            with distributed.together("writing the final files"):
                if main:
                    writer.wait()
                    return finish_run(out, model, test, history)
            return RunResult(out, test.accuracy, sum(r["seconds"] + r["eval_seconds"] for r in history),
                             len(history), history)
        except KeyboardInterrupt as exc:
            raise RunInterrupted(f"{exc or 'interrupted'}; {_resume_hint(out if opened else None)}",
                                 getattr(exc, "exit_code", 130)) from None
        except RuntimeError as exc:
            if rank is None or not distributed.is_peer_failure(exc):
                raise
            raise distributed.PeerFailure(f"lost contact with the other ranks ({first_line(exc)}); "
                                          "another rank probably failed (see its error)") from None
        finally:
            writer.close()  # an interrupted or failed run still leaves its last epoch's files complete
            if rank is not None:
                # DDP's reducer keeps the process group alive; freed at interpreter exit instead of
                # here, gloo's threads can abort the process (SIGABRT, "terminate called ...").
                net = step_model = eval_model = model = optimizer = None
                gc.collect()
            distributed.destroy()


class _EpochWriter:
    """Writes an epoch's checkpoint, then metrics.jsonl, on a background thread while the next epoch trains.

    One write at a time: ``submit`` first waits for the previous one. Each file is written
    atomically and the checkpoint first, so after any crash metrics.jsonl is at most one epoch
    behind the checkpoint (what ``fit(resume=True)`` repairs). A failed write is raised by the
    next ``submit`` or ``wait``; ``close`` only waits (the run is already failing).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, checkpoint: Path, snapshot: tuple, metrics_path: Path, metrics: str) -> None:
        self.wait()

        def write() -> None:
            try:
                write_state(checkpoint, snapshot)
                write_text(metrics_path, metrics)
            except BaseException as exc:  # noqa: BLE001  (handed to the training thread)
                self._error = exc

        self._thread = threading.Thread(target=write, name="convzoo-checkpoint")
        self._thread.start()

    def wait(self) -> None:
        self.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            while thread.is_alive():  # join in slices: SIGINT/SIGTERM stay deliverable to this thread
                thread.join(0.1)


def _quiet(_message: str) -> None:
    pass


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _load_batches(config: TrainConfig, device: torch.device, rank: distributed.Rank | None) -> tuple[Batches, Batches]:
    """The training batches (this rank's share of each global batch) and this rank's shard of the test set."""
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
    train = Batches(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed, device=device,
                    resize=config.resize, augment=config.augment, rank=0 if rank is None else rank.rank,
                    world_size=world, channels_last=config.channels_last)
    part = distributed.shard(len(test_x), rank)
    test = Batches(test_x[part], test_y[part], config.eval_batch_size, device=device, resize=config.resize,
                   channels_last=config.channels_last)
    return train, test


def _open_run_dir(out: Path, config: TrainConfig, model: nn.Module, device: torch.device, command: str | None,
                  *, resume: bool, overwrite: bool) -> None:
    """Create the run directory with its config.json, or update a resumed run's config (new --epochs, --lr)."""
    if resume and (out / "config.json").is_file():
        meta = json.loads((out / "config.json").read_text())
        if meta.get("config") != asdict(config):
            write_json(out / "config.json", {**meta, "config": asdict(config)})
        return
    if not resume:
        prepare_run_dir(out, overwrite)
    write_json(out / "config.json", {
        "format": FORMAT, "config": asdict(config), "model": model.config, "versions": _versions(),
        "device": str(device), "device_name": device_name(device),
        "command": command or " ".join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def divergence_check_interval(device: torch.device) -> int:
    """Training steps between checks that the loss is finite.

    Every step on the CPU, where reading a scalar costs nothing. On a GPU reading it waits for the
    device to finish the step, so the check reads the epoch's running loss sum (on the device, NaN
    once any step's loss was) every 50 steps and at the end of each epoch: a divergence stops the
    run at most 50 steps late, always before the epoch's checkpoint is written.
    """
    return 1 if device.type == "cpu" else 50


def _check_finite(loss_sum: torch.Tensor, config: TrainConfig, out: Path, epoch: int, step: int, steps: int,
                  lr: float) -> None:
    """Raise ``DivergenceError`` if the running loss sum of any rank is NaN or infinite."""
    bad = (~torch.isfinite(loss_sum)).to(torch.int32).view(1)
    distributed.all_reduce_sum(bad)
    if not bad.item():
        return
    value = float(loss_sum)
    became = f"became {value}" if not math.isfinite(value) else "became non-finite on another rank"
    suggestion = f"{config.lr / 10:g}"
    fast = " (or --recipe fast)" if config.recipe != "fast" else ""
    raise DivergenceError(
        f"the training loss {became} in epoch {epoch + 1} (by step {step + 1} of {steps}, lr {lr:g}): "
        f"the learning rate is likely too high for {config.model} with the {config.recipe} recipe; "
        f"try --lr {suggestion}{fast}. {_resume_hint(out)} --lr {suggestion}")


# Epochs at chance accuracy after which a run is reported as not learning. Not 1: trained on the
# full training set, the book's LeNet recipe is at 0.11 test accuracy after its first epoch and at
# 0.66 after its second (measured on 2,000 test images); the NiN and GoogLeNet recipes that stall
# stay at 0.10 for every epoch.
STALL_EPOCHS = 2


def not_learning(history: list[dict], config: TrainConfig) -> str | None:
    """The warning for a run whose test accuracy stayed at chance level (<= 1/classes + 0.02) in every epoch of
    ``history``, else None."""
    chance = 1 / len(CLASSES)
    accuracies = [row["test_acc"] for row in history]
    if not accuracies or max(accuracies) > chance + 0.02:
        return None
    fast = " or use --recipe fast" if config.recipe != "fast" else ""
    return (f"{config.model} is not learning: test accuracy has stayed at chance ({chance:.2f}) for "
            f"{len(accuracies)} epochs ({', '.join(f'{a:.4f}' for a in accuracies)}); lower the learning rate "
            f"(e.g. --lr {config.lr / 10:g}){fast}")


def _resume_hint(run_dir: Path | None) -> str:
    """What the run directory keeps and the command that continues it."""
    if run_dir is None or not (run_dir / "config.json").is_file():
        return "nothing was written"
    epochs = saved_epoch(run_dir / "checkpoint.safetensors") or 0
    return (f"{run_dir} keeps {epochs} completed epoch{'s' if epochs != 1 else ''}; "
            f"continue with: convzoo train --resume {shlex.quote(str(run_dir))}")


@contextlib.contextmanager
def _interrupt_on_signals() -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """While a run trains, SIGINT and SIGTERM raise ``RunInterrupted`` (exit status 130 and 143).

    The exception abandons the current step and unwinds: temporary files are removed and the
    progress bar is closed. Yields ``hold``, a context in which a signal waits until the block
    is done, so that files which must agree (the checkpoint and metrics.jsonl) are written
    together. Signals the process was started ignoring stay ignored; only the main thread can
    take signals.
    """
    pending: list[RunInterrupted] = []
    holding = [False]

    def interrupt(signum: int, _frame: object) -> None:
        exc = RunInterrupted(f"interrupted by {signal.Signals(signum).name}", 128 + signum)
        if holding[0]:
            pending.append(exc)
        else:
            raise exc

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        holding[0] = True
        try:
            yield
        finally:
            holding[0] = False
        if pending:
            raise pending.pop()

    if threading.current_thread() is not threading.main_thread():
        yield contextlib.nullcontext
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield hold
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def backend_settings(config: TrainConfig) -> Iterator[None]:
    """Fix the CPU thread count (``config.threads``) and, with ``config.deterministic``, use deterministic
    kernels (cuDNN autotuning off); otherwise, on CUDA, allow TF32 matmuls and, with ``config.autotune``,
    autotune cuDNN. Everything is restored afterwards.

    Autotuning times the candidate algorithms of every convolution shape (forward, both backward
    passes; the last partial batch and the evaluation batch are shapes of their own) the first time
    it runs: it pays in long runs of a few layer shapes and can cost seconds in a short run of a
    network with many (GoogLeNet has 57 convolutions).

    On the CPU a deterministic run with the same thread count is bitwise reproducible, so a resumed
    run ends with the weights of an uninterrupted one. CUDA ops without a deterministic kernel
    warn instead of failing (``warn_only``).
    """
    threads, saved = torch.get_num_threads(), None
    if config.threads:
        torch.set_num_threads(config.threads)
    fast = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    if not config.deterministic and resolve_device(config.device).type == "cuda":
        # cuDNN autotunes each layer's algorithm on its first batch; float32 matmuls may use TF32.
        torch.backends.cudnn.benchmark = config.autotune
        torch.set_float32_matmul_precision("high")
    if config.deterministic:  # only then: switching determinism imports torch._inductor (a second)
        saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                 torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = fast[0]
        torch.set_float32_matmul_precision(fast[1])
        if saved is not None:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def finish_run(run_dir: Path, model: nn.Module, test: Evaluation, history: list[dict]) -> RunResult:
    """Write the final weights, figures and ``result.json`` of a completed run."""
    from .report import write_report  # matplotlib only once a run is done

    save_model(run_dir / "model.safetensors", model)
    result = RunResult(run_dir, test.accuracy, sum(r["seconds"] + r["eval_seconds"] for r in history),
                       len(history), history)
    write_json(run_dir / "result.json", {**result.to_json(), "per_class_accuracy": dict(
        zip(CLASSES, (round(a, 4) for a in test.per_class_accuracy)))})
    write_report(run_dir, evaluation=test)  # draws curves.png, confusion.png, kernels.png, mistakes.png
    return result


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[TrainConfig, nn.Module, torch.device]:
    """The config and trained model of a run directory, on ``device``, prepared as in training."""
    from .checkpoint import load_model

    config = read_run_config(run_dir)["config"]
    dev = resolve_device(device)
    model = load_model(Path(run_dir) / "model.safetensors", dev)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return config, model, dev


def evaluate_run(run_dir: str | Path, device: str = "auto", data_dir: str | None = None) -> Evaluation:
    """Evaluate a run's final model on the test images it was evaluated on in training."""
    config, model, dev = load_run(run_dir, device)
    images, labels = load_split("test", data_dir or config.data_dir)
    images, labels = images[: config.limit_test], labels[: config.limit_test]
    batches = Batches(images, labels, config.eval_batch_size, device=dev, resize=config.resize,
                      channels_last=config.channels_last)
    return evaluate(model, batches, config.amp, config.tta)
