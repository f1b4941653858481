"""Training recipes, the fit and evaluate loops, and run directories.

A run directory holds everything a run produced:

    config.json              resolved config, versions, device, command
    metrics.jsonl            one line per epoch
    checkpoint.safetensors   resume state after the last completed epoch (written every epoch)
    model.safetensors        final weights + the model's name and arguments
    curves.png, confusion.png, result.json

Speed by design: both splits live on the training device as uint8 tensors, batches are cut by
index and converted/resized there (``convzoo.data.Batches``), and metrics are accumulated on the
device and read once per epoch.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import __version__
from .checkpoint import FORMAT, load_state, save_model, save_state
from .data import CLASSES, Batches, load_split
from .errors import UserError
from .io import write_json, write_text
from .models import create_model, get_model_spec


class ConfigError(UserError):
    """A training option that cannot work (bad value, missing device, existing output directory)."""


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

# The modern recipe: (learning rate, batch size, input side, epochs) with SGD + Nesterov momentum,
# weight decay, a one-cycle schedule, label smoothing and flip/crop augmentation.
FAST_RECIPES: dict[str, tuple[float, int, int, int]] = {
    "lenet": (0.1, 256, 28, 10),
    "lenet_bn": (0.2, 256, 28, 10),
    "alexnet": (0.02, 128, 96, 10),
    "vgg11": (0.02, 128, 96, 10),
    "vgg11_small": (0.05, 128, 96, 10),
    "nin": (0.05, 128, 96, 10),
    "googlenet": (0.05, 128, 96, 10),
    "resnet18": (0.1, 256, 64, 10),
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
    init: str = "xavier"  # "xavier" (the book) or "default" (PyTorch's)
    resize: int = 28
    seed: int = 0
    device: str = "auto"
    backend: str = "torch"
    channels_last: bool = True  # NHWC activations: oneDNN's fast convolution path on CPU and GPU
    amp: bool = False  # bfloat16 autocast for the forward pass (weights and optimizer stay float32)
    compile: bool = False  # torch.compile the model (pays off only when a run is long enough)
    limit_train: int | None = None
    limit_test: int | None = None
    data_dir: str | None = None
    eval_batch_size: int = 1000

    def validate(self) -> None:
        get_model_spec(self.model)
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (math.isfinite(self.momentum) and self.momentum >= 0, f"--momentum must be >= 0, got {self.momentum}"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.init in ("xavier", "default"), f"init must be 'xavier' or 'default', got {self.init!r}"),
            (self.resize >= 1, f"--resize must be a positive side length, got {self.resize}"),
            (self.limit_train is None or self.limit_train >= 1, f"--limit-train must be >= 1, got {self.limit_train}"),
            (self.limit_test is None or self.limit_test >= 1, f"--limit-test must be >= 1, got {self.limit_test}"),
            (self.eval_batch_size >= 1, f"eval batch size must be >= 1, got {self.eval_batch_size}"),
            (self.backend in ("torch", "scratch"), f"--backend must be torch or scratch, got {self.backend!r}"),
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
        lr, batch, size, epochs = FAST_RECIPES.get(model, (0.05, 128, get_model_spec(model).input_size, 10))
        config = TrainConfig(
            model=model, recipe=name, lr=lr, batch_size=batch, resize=size, epochs=epochs, momentum=0.9,
            weight_decay=5e-4, schedule="onecycle", label_smoothing=0.1, augment=True, init="default",
        )
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


def init_weights(model: nn.Module, scheme: str) -> None:
    """``xavier``: the book's Xavier-uniform weights for every Conv2d and Linear (biases kept)."""
    if scheme == "xavier":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
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


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, amp: bool = False) -> Evaluation:
    """Accuracy, mean loss, confusion matrix and predictions of ``model`` over ``batches``."""
    was_training = model.training
    model.eval()
    num_classes = len(CLASSES)
    loss_sum = torch.zeros((), device=batches.device)
    predictions = []
    for x, y in batches:
        with autocast(batches.device, amp):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        predictions.append(logits.argmax(dim=1))
    model.train(was_training)
    pred = torch.cat(predictions)
    labels = batches.labels[: len(pred)]
    confusion = torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(num_classes, num_classes)
    correct = int(confusion.trace())
    n = len(pred)
    return Evaluation(correct / n, float(loss_sum) / n, confusion.cpu().numpy(), pred.cpu())


def _versions() -> dict[str, str]:
    return {"convzoo": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def prepare_run_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Create ``out``; an existing non-empty directory is refused unless ``overwrite`` (a run's only)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already exists; use --resume {out} to continue it, --overwrite to replace it, "
                              "or another --out")
        if not (out / "config.json").is_file():
            raise ConfigError(f"refusing to overwrite {out}: it is not a convzoo run directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_run_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a run directory, checked for this format version."""
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
        config.validate()
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path} has an invalid training configuration ({exc})") from None
    meta["config"] = config
    return meta


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
    command: str | None = None,
) -> RunResult:
    """Train ``config`` into the run directory ``out`` (or continue it with ``resume``)."""
    config.validate()
    device = resolve_device(config.device)
    run_dir = Path(out) if resume else prepare_run_dir(out, overwrite)
    torch.manual_seed(config.seed)

    train_x, train_y = load_split("train", config.data_dir)
    test_x, test_y = load_split("test", config.data_dir)
    train_x, train_y = train_x[: config.limit_train], train_y[: config.limit_train]
    test_x, test_y = test_x[: config.limit_test], test_y[: config.limit_test]
    train_batches = Batches(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed, device=device,
                            resize=config.resize, augment=config.augment)
    test_batches = Batches(test_x, test_y, config.eval_batch_size, device=device, resize=config.resize)

    model = create_model(config.model, backend=config.backend, input_size=config.resize)
    init_weights(model, config.init)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    step_model = torch.compile(model) if config.compile else model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    start_epoch, history = 0, []
    checkpoint = run_dir / "checkpoint.safetensors"
    if resume and checkpoint.is_file():
        start_epoch, history = load_state(checkpoint, model, optimizer)
        log(f"resuming {run_dir} after epoch {start_epoch}")
    if not resume or not (run_dir / "config.json").is_file():
        write_json(run_dir / "config.json", {
            "format": FORMAT, "config": asdict(config), "model": model.config, "versions": _versions(),
            "device": str(device), "device_name": device_name(device),
            "command": command or " ".join(sys.argv),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

    steps_per_epoch = len(train_batches)
    total_steps = steps_per_epoch * config.epochs
    show = sys.stderr.isatty() if progress is None else progress
    test = None
    for epoch in range(start_epoch, config.epochs):
        train_batches.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        started = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show,
                   leave=False, unit="batch", file=sys.stderr)
        for step, (x, y) in enumerate(train_batches, start=epoch * steps_per_epoch):
            lr = config.lr * lr_factor(config.schedule, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, config.amp):
                logits = step_model(x)
                loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
            seen += len(y)
            if show:
                bar.update()
                if step % 20 == 0:
                    elapsed = time.perf_counter() - started
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                    ex_s=f"{seen / max(elapsed, 1e-9):,.0f}")
        bar.close()
        train_loss, train_acc = loss_sum.item() / seen, correct.item() / seen  # one sync per epoch
        seconds = time.perf_counter() - started
        evaluated = time.perf_counter()
        test = evaluate(step_model, test_batches, config.amp)
        row = {
            "epoch": epoch + 1, "train_loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
            "test_acc": round(test.accuracy, 6), "lr": lr, "seconds": round(seconds, 3),
            "examples_per_sec": round(seen / seconds, 1),
            "eval_seconds": round(time.perf_counter() - evaluated, 3),
        }
        history.append(row)
        save_state(checkpoint, model, optimizer, epoch=epoch + 1, history=history)
        write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        log(f"epoch {row['epoch']:>3}/{config.epochs}  loss {train_loss:.4f}  train acc {train_acc:.4f}  "
            f"test acc {test.accuracy:.4f}  {seconds:.1f} s  {row['examples_per_sec']:,.0f} ex/s")

    return finish_run(run_dir, model, test or evaluate(model, test_batches, config.amp), history)


def finish_run(run_dir: Path, model: nn.Module, test: Evaluation, history: list[dict]) -> RunResult:
    """Write the final weights, figures and ``result.json`` of a completed run."""
    from .plots import plot_confusion, plot_curves  # matplotlib only once a run is done

    save_model(run_dir / "model.safetensors", model)
    name = model.config["name"]
    plot_curves(history, run_dir / "curves.png", title=name)
    plot_confusion(test.confusion, CLASSES, run_dir / "confusion.png",
                   title=f"{name}: test accuracy {test.accuracy:.4f}")
    result = RunResult(run_dir, test.accuracy, sum(r["seconds"] + r["eval_seconds"] for r in history),
                       len(history), history)
    write_json(run_dir / "result.json", {**result.to_json(), "per_class_accuracy": dict(
        zip(CLASSES, (round(a, 4) for a in test.per_class_accuracy)))})
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
    batches = Batches(images, labels, config.eval_batch_size, device=dev, resize=config.resize)
    return evaluate(model, batches, config.amp)
