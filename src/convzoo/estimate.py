"""What a run will cost before it starts: parameters, MACs, memory, and time from a few timed steps.

    plan_run(config)        a ``Plan``: the resolved config and its cost (``convzoo train ... --dry-run``)
    run_seconds(...)        a run's time from the time of one step and of scoring one test image
    shorter(config)         the options that would make a run quicker (``--limit-train``, ``--resize``, ...)

Time is measured, not modelled: ``time_step`` trains the run's own network, optimizer and
precision on random data for a few steps on the chosen device and scores one batch as the
evaluation does. Steps on a GPU are timed eagerly, without the CUDA graphs training may
replay, so a small network's estimate there is on the high side. Memory is an estimate from
the shapes: the data set on the device, the weights with their gradients and optimizer state,
and the activations of one batch that the backward pass keeps (every layer's output).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig, option_fields
from .data import DataSet
from .evaluate import run_data, scores, splits, validation_split
from .models import InputSizeError, create_model, feature_size, get_model_spec
from .network import build_model
from .optim import make_optimizer
from .resources import estimate_memory
from .runtime import compute_settings, device_name, resolve_device, thread_choice
from .step import TrainStep
from .summary import summarize
from .terms import door, in_python, setting, speaking

LONG_RUN_SECONDS = 300  # a run expected to take longer is announced as it starts (``note: ...``)
_TIMED_SECONDS = 2.0  # how long time_step keeps timing steps once one is warm


@dataclass
class Plan:
    """A run's resolved configuration and what it will cost on ``device``."""

    config: TrainConfig
    device: str
    device_name: str
    params: int
    macs: int  # multiply-accumulates of one forward pass of one image at config.input_size
    train_images: int
    test_images: int
    steps_per_epoch: int
    epochs: int  # the epochs still to train (fewer than config.epochs for a resumed run)
    memory: dict[str, int]  # bytes: data, weights (with gradients and optimizer state), activations
    step_seconds: float  # one training step of config.batch_size images
    eval_image_seconds: float  # scoring one test image (both passes with --tta)
    seconds: float  # the whole run: training and every epoch's evaluation
    run_dir: str | None = None  # where the run would be written
    threads: str = ""  # the thread count the steps were timed with, and why (``runtime.thread_choice``)
    val_images: int = 0  # held out of the training images and scored after each epoch (``val_fraction``)
    door: str = field(default_factory=door, repr=False)  # whose words the plan prints in (``convzoo.terms``)

    def to_json(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "door"}, "config": asdict(self.config)}

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """The plan as ``convzoo train --dry-run`` prints it, in the words of the door that made it."""
        with speaking(self.door):
            return self._format()

    def _scored(self) -> str:
        if self.val_images:
            return (f"{self.val_images:,} validation images scored after each epoch, {self.test_images:,} test "
                    "images once at the end")
        return f"{self.test_images:,} test images scored after each epoch"

    def _format(self) -> str:
        config, mib = self.config, 2**20
        flags, comma = [""], "," if in_python() else ""
        for item in as_settings(config):  # lines of at most 100 characters; a setting and its value stay together
            if flags[-1] and len(flags[-1]) + len(item) >= 100:
                flags[-1] += comma
                flags.append(item)
            else:
                flags[-1] = f"{flags[-1]}{comma} {item}" if flags[-1] else item
        lines = [f"{config.model} with the {config.recipe} recipe, resolved (nothing was created):",
                 *(f"  {line}" for line in flags),
                 f"parameters       {self.params:,}",
                 f"MACs per image   {self.macs:,} at {config.input_size}x{config.input_size} (FLOPs = 2 x MACs)",
                 f"training         {self.epochs} epoch(s) x {self.steps_per_epoch:,} steps of {config.batch_size} "
                 f"({self.train_images:,} images); {self._scored()}",
                 f"memory on {self.device:<6} about {sum(self.memory.values()) / mib:,.0f} MiB: data "
                 f"{self.memory['data'] / mib:,.1f}, weights with gradients and optimizer state "
                 f"{self.memory['weights'] / mib:,.1f}, activations of a batch {self.memory['activations'] / mib:,.1f}",
                 f"time on {self.device:<8} about {format_seconds(self.seconds)} ({self.step_seconds * 1e3:,.1f} ms "
                 f"a training step, {self.eval_image_seconds * 1e3:,.2f} ms to score a test image; measured on "
                 f"{self.device_name})"]
        if self.threads and self.device == "cpu":  # on a busy machine the time holds while the load stays as it is
            lines.append(f"timed with {self.threads}")
        if self.seconds > LONG_RUN_SECONDS and (options := shorter(config)):
            lines.append(f"quicker: {options}")
        return "\n".join(lines)


def as_settings(config: TrainConfig) -> list[str]:
    """``config`` as the settings that give it: ``--recipe d2l --epochs 10 ... --no-augment ...`` on the command
    line, ``recipe='d2l', epochs=10, ..., augment=False`` in Python."""
    names = ["recipe", *(f.name for f in option_fields())]
    return [setting(name, getattr(config, name)) for name in names if getattr(config, name) is not None]


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 05 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run_seconds(config: TrainConfig, epochs: int, steps_per_epoch: int, test_images: int, step_seconds: float,
                eval_image_seconds: float | None = None) -> float:
    """A run's training and evaluation time. Without a measured ``eval_image_seconds``, scoring an image
    is taken as a third of training on it (a forward pass of the three a step makes), twice with ``--tta``."""
    if eval_image_seconds is None:
        eval_image_seconds = step_seconds / config.batch_size / 3 * (2 if config.tta else 1)
    return epochs * (steps_per_epoch * step_seconds + test_images * eval_image_seconds)


def shorter(config: TrainConfig) -> str:
    """The options that would shorten a run of ``config``, as flags (empty if there are none)."""
    options = []
    if config.limit_train is None or config.limit_train > 10_000:
        options.append(setting("limit_train", 10_000))
    if config.limit_test is None or config.limit_test > 2_000:
        options.append(setting("limit_test", 2_000))
    smaller = max(smallest_input_size(config.model), config.input_size // 2, 32)  # 28x28 is the data's own size
    if smaller <= config.input_size * 3 // 4:  # a quarter fewer pixels at least, or it is not worth saying
        options.append(setting("input_size", smaller))
    if config.recipe != "fast":
        options.append(setting("recipe", "fast"))
    if config.epochs > 2:
        options.append(setting("epochs", 2))
    if resolve_device(config.device).type == "cpu":
        options.append(f"a GPU ({setting('device', 'cuda')})")
    return ", ".join(options)


def smallest_input_size(model: str) -> int:
    """The smallest input side ``model`` takes (its feature maps vanish below it), from the shape formulas."""
    with torch.device("meta"):
        network = create_model(model)
    for size in range(1, get_model_spec(model).input_size + 1):
        try:
            feature_size(network, size)
            return size
        except InputSizeError:
            continue
    return get_model_spec(model).input_size


def memory_bytes(config: TrainConfig, train_images: int, test_images: int, data: DataSet | None = None
                 ) -> dict[str, int]:
    """Estimated device memory of a run (``convzoo.resources.estimate_memory``): the uint8 splits, the weights
    with gradients and optimizer state, and what one training batch keeps for the backward pass."""
    estimate = estimate_memory(replace(config, limit_train=train_images, limit_test=test_images), data)
    return {"data": estimate.data, "weights": estimate.weights,
            "activations": estimate.per_train_image * config.batch_size}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(config: TrainConfig, model: nn.Module, device: torch.device, *, steps: int = 3) -> tuple[float, float]:
    """Seconds of one training step and of scoring one test image, measured on random data.

    One step warms up (kernel selection, allocations), then up to ``steps`` are timed, fewer when
    they take over ``_TIMED_SECONDS``; a first step that takes that long is the estimate itself (a
    warm one is a little quicker). Scoring is timed on one batch of at most 64 images.
    """
    optimizer = make_optimizer(model, config, device=device)
    step = TrainStep(model, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), optimizer, device,
                     amp=config.amp)
    shape = getattr(model, "config", {})
    x = torch.rand(config.batch_size, shape.get("in_channels", 1), config.input_size, config.input_size, device=device)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, shape.get("num_classes", 10), (config.batch_size,), device=device)
    model.train()
    started = time.perf_counter()
    step(x, y)
    _synchronize(device)
    step_seconds = time.perf_counter() - started
    if step_seconds < _TIMED_SECONDS:
        started, timed = time.perf_counter(), 0
        while timed < steps and (timed == 0 or time.perf_counter() - started < _TIMED_SECONDS):
            step(x, y)
            _synchronize(device)
            timed += 1
        step_seconds = (time.perf_counter() - started) / timed
    model.eval()
    batch = x[: min(config.eval_batch_size, 64)]
    with torch.no_grad():
        scores(model, batch, config.amp, config.tta)  # warm-up of the evaluation's shapes
        _synchronize(device)
        started = time.perf_counter()
        scores(model, batch, config.amp, config.tta)
        _synchronize(device)
    return step_seconds, (time.perf_counter() - started) / len(batch)


def plan_run(config: TrainConfig, *, done_epochs: int = 0, steps: int = 3, run_dir: str | Path | None = None) -> Plan:
    """The ``Plan`` of a run of ``config`` (``done_epochs`` already trained, for a resumed run).

    Reads the data set (its sizes), builds the network on the run's device and times ``steps``
    training steps on random data; writes nothing.
    """
    device = resolve_device(config.device)
    data = run_data(config)
    train_x, train_y, _, test_y = splits(config, data)
    val_images = len(validation_split(config, train_x, train_y)[3]) if config.val_fraction else 0
    train_images, test_images = len(train_y) - val_images, len(test_y)
    threads, why = thread_choice(config)
    with compute_settings(config, threads):
        model = build_model(config, device, num_classes=data.num_classes, in_channels=data.channels)
        summary = summarize(model, config.input_size, in_channels=data.channels)
        memory = memory_bytes(config, train_images + val_images, test_images, data)
        step_seconds, eval_seconds = time_step(config, model, device, steps=steps)
        name = device_name(device)  # with the thread count the steps were timed with
    steps_per_epoch = -(-train_images // config.batch_size)
    epochs = max(config.epochs - done_epochs, 0)
    seconds = run_seconds(config, epochs, steps_per_epoch, val_images or test_images, step_seconds, eval_seconds)
    seconds += test_images * eval_seconds if val_images and epochs else 0  # the test set, scored once at the end
    return Plan(config, str(device), name, summary.total_params, summary.total_macs, train_images,
                test_images, steps_per_epoch, epochs, memory, step_seconds, eval_seconds, seconds,
                None if run_dir is None else str(run_dir), why, val_images)
