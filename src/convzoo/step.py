"""One training step, eager or replayed from a CUDA graph.

A small network at a small batch spends most of a step launching kernels: the book's LeNet
runs about a hundred of them per step, each a few microseconds of GPU work behind tens of
microseconds of Python and dispatcher work. ``TrainStep`` with ``cuda_graph`` records the whole
step (forward, loss, backward, optimizer update and the epoch's metric sums) once as a CUDA
graph and then replays it: one launch per step, whatever the network. On an H200 that took
LeNet from 109,000 to about 650,000 training examples/s and GoogLeNet from 8,900 to 21,100.

What a graph needs, and how the step provides it:

* fixed addresses: the batch is copied into static input tensors, gradients live in the graph's
  memory pool, and the metric sums are tensors zeroed in place each epoch;
* no host work inside: the learning rate is a device tensor the fused optimizer reads
  (``make_optimizer(..., graphable=True)``), updated with ``fill_`` between steps;
* fixed shapes: a batch of another size (the last, partial one) runs eagerly, updating the same
  weights, optimizer state and sums;
* warmed-up kernels: the first ``WARMUP`` steps run eagerly on a side stream, which picks the
  cuDNN algorithms and creates the optimizer state before the capture.

Replay draws dropout masks from the CUDA generator as eager steps do. Results are the eager
step's to floating-point rounding: the same kernels run in the same order.

A ``torch.compile``-d model is captured the same way. Its first warm-up step compiles the
forward and backward graphs (and runs Triton's autotuning, which launches kernels of its own
and so cannot happen during a capture); the capture then records the compiled kernels, whose
launches no longer cost Python time on replay. Compilation fuses the elementwise work around
the convolutions (ReLUs, casts, pooling) into fewer kernels; the graph removes the launches left.
The capture refuses to compile: a recompilation there (a guard the warm-up did not satisfy)
raises instead of benchmarking kernels inside the graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

WARMUP = 3  # eager steps before the capture (the PyTorch CUDA-graph notes use 3; DDP would need 11)


def autocast(device: torch.device, enabled: bool, cache: bool = True) -> torch.autocast:
    """bfloat16 autocast on ``device`` when ``enabled`` (a no-op context otherwise, and on devices other
    than the CPU and CUDA, where it is untested). ``cache=False`` for graph capture, which cannot keep
    autocast's cast weights between replays."""
    enabled = enabled and device.type in ("cpu", "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache and enabled)


def _no_recompilation() -> contextlib.AbstractContextManager:
    """A context in which a compiled function that would need compiling again raises instead (torch >= 2.6;
    nothing on older versions, which do without the clear error)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("fail_on_recompile") if set_stance else contextlib.nullcontext()


class TrainStep:
    """``step(x, y)`` trains ``model`` on one batch; ``loss_sum`` and ``correct`` accumulate on the device.

    ``cuda_graph`` (honoured on CUDA only) captures the step after ``WARMUP`` eager ones and
    replays it for every later batch of the same shape; with ``batch_size`` only batches of that
    size are warmed up and captured, so that a short split's partial batch is never the one recorded.
    ``model`` may be ``torch.compile``-d: the warm-up compiles it, the capture records its kernels.
    The optimizer must then take its learning rate as a device tensor (``make_optimizer(...,
    graphable=True)``); ``set_lr`` writes either kind.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        amp: bool = False,
        cuda_graph: bool = False,
        batch_size: int | None = None,
    ) -> None:
        self.model, self.loss_fn, self.optimizer, self.device, self.amp = model, loss_fn, optimizer, device, amp
        self.cuda_graph = cuda_graph and device.type == "cuda"
        self.batch_size = batch_size
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.replays = 0
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warm = 0
        self._lr: float | None = None

    def reset(self) -> None:
        """Zero the metric sums (at the start of an epoch)."""
        self.loss_sum.zero_()
        self.correct.zero_()

    def set_lr(self, lr: float) -> None:
        if lr == self._lr:
            return
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._lr = lr

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(self.device, self.amp, cache=not self.cuda_graph):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.argmax(dim=1) == y).sum()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self._static is not None and x.shape == self._static[0].shape:
            self._static[0].copy_(x)
            self._static[1].copy_(y)
            self.graph.replay()  # type: ignore[union-attr]
            self.replays += 1
        elif not self.cuda_graph or self.graph is not None or (self.batch_size and len(x) != self.batch_size):
            self._step(x, y)  # no graph, or a batch of another shape than the captured (or to be captured) one
        elif self._warm < WARMUP:
            self._warm += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self._step(x, y)
            torch.cuda.current_stream(self.device).wait_stream(side)
        else:
            self._capture(x, y)

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record the step on ``(x, y)`` (capture runs nothing), then replay it to train on that batch."""
        self._static = (x.clone(memory_format=torch.preserve_format), y.clone())  # the warm-up's strides
        self.optimizer.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with _no_recompilation(), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self._step(*self._static)
        self.graph.replay()
        self.replays += 1
