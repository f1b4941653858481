"""``nn.Module`` wrappers over ``convzoo.ops``: the chapter's ``Conv2D`` and drop-ins for ``torch.nn``.

``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``BatchNorm1d`` and ``BatchNorm2d`` subclass their
``torch.nn`` twins and replace only the computation, so constructor arguments, defaults,
initialisation, ``repr`` and ``state_dict`` keys are PyTorch's own and weights move freely
between a network built from these and one built from ``torch.nn``.
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import torch
from torch import nn

from . import ops


class Conv2D(nn.Module):
    """The chapter's 2-D convolution layer: one learnable ``kernel_size`` kernel and a scalar bias.

    ``(H, W) -> (H - kh + 1, W - kw + 1)``.
    """

    def __init__(self, kernel_size: tuple[int, int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(kernel_size))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.corr2d(x, self.weight) + self.bias


class Conv2d(nn.Conv2d):
    """Drop-in ``torch.nn.Conv2d`` computed by ``convzoo.ops.conv2d``."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        padding = self.padding if isinstance(self.padding, str) else tuple(self.padding)
        return ops.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups, self.padding_mode)


class MaxPool2d(nn.MaxPool2d):
    """Drop-in ``torch.nn.MaxPool2d`` computed by ``convzoo.ops.max_pool2d``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.return_indices:
            raise ValueError("convzoo's MaxPool2d does not return indices; use torch.nn.MaxPool2d for that")
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


class AvgPool2d(nn.AvgPool2d):
    """Drop-in ``torch.nn.AvgPool2d`` computed by ``convzoo.ops.avg_pool2d``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.avg_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, self.divisor_override,
        )


class GlobalAvgPool2d(nn.Module):
    """``(N, C, H, W) -> (N, C, 1, 1)``: average each feature map (NiN's and GoogLeNet's head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.global_avg_pool2d(x)


class _BatchNorm:
    """Shared forward of the batch-norm drop-ins, computed by ``convzoo.ops.batch_norm``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # PyTorch's cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        # As in torch.nn: batch statistics in training (or with no running estimates), and the
        # running estimates are updated in training and read in evaluation.
        pass_stats = not self.training or self.track_running_stats
        return ops.batch_norm(
            input,
            self.running_mean if pass_stats else None,
            self.running_var if pass_stats else None,
            self.weight, self.bias, self.training or self.running_mean is None, momentum or 0.0, self.eps,
        )


class BatchNorm1d(_BatchNorm, nn.BatchNorm1d):
    """Drop-in ``torch.nn.BatchNorm1d`` on ``(N, C)`` inputs."""


class BatchNorm2d(_BatchNorm, nn.BatchNorm2d):
    """Drop-in ``torch.nn.BatchNorm2d``."""


# The layer set each backend builds networks from: same names, same constructor arguments,
# same state_dict keys. Activations, Linear and Dropout are torch.nn's in both.
BACKENDS: dict[str, SimpleNamespace] = {
    "torch": SimpleNamespace(
        Conv2d=nn.Conv2d, MaxPool2d=nn.MaxPool2d, AvgPool2d=nn.AvgPool2d,
        GlobalAvgPool2d=partial(nn.AdaptiveAvgPool2d, (1, 1)), Flatten=nn.Flatten,
        BatchNorm1d=nn.BatchNorm1d, BatchNorm2d=nn.BatchNorm2d,
    ),
    "scratch": SimpleNamespace(
        Conv2d=Conv2d, MaxPool2d=MaxPool2d, AvgPool2d=AvgPool2d, GlobalAvgPool2d=GlobalAvgPool2d,
        Flatten=nn.Flatten, BatchNorm1d=BatchNorm1d, BatchNorm2d=BatchNorm2d,
    ),
}


def layers_for(backend: str) -> SimpleNamespace:
    """The layer classes of ``backend`` (``"torch"`` or ``"scratch"``)."""
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}") from None
