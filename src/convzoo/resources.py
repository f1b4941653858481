"""What a run needs of the machine, checked before any work: memory for the model and its batches.

The estimate counts the weights with their gradients and optimizer state (float32), the data set
(uint8 pixels and int64 labels, on the training device), and each layer's output for a batch
(float32, or bfloat16 under ``--amp``): all of them kept for the backward pass when training, two
consecutive layers at a time when evaluating. It is measured on the
``meta`` device (shapes only, no memory), so it costs milliseconds even for a network that would
not fit. Real use differs by workspace buffers and the allocator's caching; the check refuses
only what cannot fit by a clear margin.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .config import TrainConfig
from .data import DataSet
from .errors import ConfigError
from .models import create_model
from .summary import summarize
from .terms import option, setting

GIB = 1024 ** 3
TRAIN_IMAGES, TEST_IMAGES, IMAGE_BYTES = 60_000, 10_000, 28 * 28  # Fashion-MNIST: the data when none is given


@dataclass
class MemoryEstimate:
    """Bytes a run needs on its training device."""

    weights: int  # weights, gradients and optimizer state
    data: int  # both splits as uint8
    per_train_image: int  # every layer's output, per image of a training batch
    per_eval_image: int  # the largest two consecutive layer outputs, per image of an evaluation batch

    def total(self, batch_size: int, eval_batch_size: int) -> int:
        return self.weights + self.data + max(batch_size * self.per_train_image,
                                              eval_batch_size * self.per_eval_image)


def estimate_memory(config: TrainConfig, data: DataSet | None = None) -> MemoryEstimate:
    """The memory estimate of ``config``'s run (its model at its input size, its data: ``data``'s images, channels
    and classes, default Fashion-MNIST's 60,000 + 10,000 images of 1 x 28 x 28 in 10 classes)."""
    channels, classes = (1, 10) if data is None else (data.channels, data.num_classes)
    image_bytes = IMAGE_BYTES if data is None else math.prod(data.train_images.shape[1:])
    train_images, test_images = (TRAIN_IMAGES, TEST_IMAGES) if data is None else (len(data.train_labels),
                                                                                  len(data.test_labels))
    with torch.device("meta"):
        model = create_model(config.model, backend="torch", input_size=config.input_size, in_channels=channels,
                             num_classes=classes)
    summary = summarize(model, config.input_size, in_channels=channels)
    outputs = [math.prod(row.output_shape[1:]) for row in summary.layers]
    input_size = channels * config.input_size * config.input_size
    state = {"sgd": 1 if config.momentum > 0 else 0, "adamw": 2}[config.optimizer]
    value = 2 if config.amp else 4  # bytes of an activation: bfloat16 under autocast
    n_train = min(config.limit_train or train_images, train_images)
    n_test = min(config.limit_test or test_images, test_images)
    pairs = [a + b for a, b in zip([input_size, *outputs], outputs)]
    return MemoryEstimate(
        weights=4 * summary.total_params * (2 + state),
        data=(n_train + n_test) * (image_bytes + 8),  # uint8 pixels and an int64 label
        per_train_image=value * (input_size + sum(outputs)),
        per_eval_image=value * max(pairs, default=input_size),
    )


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now (CUDA: free device memory; CPU: the kernel's MemAvailable); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(config: TrainConfig, device: torch.device, available: int | None = None,
               data: DataSet | None = None) -> MemoryEstimate:
    """Refuse a run that cannot fit in ``device``'s free memory, naming the flag and the largest value that fits
    (``data``: the run's data set, default Fashion-MNIST)."""
    estimate = estimate_memory(config, data)
    available = available_memory(device) if available is None else available
    if available is None:
        return estimate
    need = estimate.total(config.batch_size, config.eval_batch_size)
    if need <= available:
        return estimate
    room = available - estimate.weights - estimate.data
    where = f"{device.type} has {available / GIB:.1f} GiB free"
    if room < max(estimate.per_train_image, estimate.per_eval_image):
        raise ConfigError(f"{config.model} at {setting('input_size', config.input_size)} needs about "
                          f"{need / GIB:.1f} GiB and the {where}, not enough even for one image at a time: use a "
                          f"smaller {option('input_size')} (the model's native size is in 'convzoo models') or "
                          f"another {option('device')}", field="input_size")
    if config.batch_size * estimate.per_train_image > room:
        largest = room // estimate.per_train_image
        raise ConfigError(f"{setting('batch_size', config.batch_size)} needs about {need / GIB:.1f} GiB for "
                          f"{config.model} at {config.input_size}x{config.input_size} and the {where}: the largest "
                          f"batch size that fits is about {largest}", field="batch_size")
    largest = room // estimate.per_eval_image
    raise ConfigError(f"{setting('eval_batch_size', config.eval_batch_size)} needs about {need / GIB:.1f} GiB for "
                      f"{config.model} at {config.input_size}x{config.input_size} and the {where}: the largest that "
                      f"fits is about {largest}", field="eval_batch_size")
