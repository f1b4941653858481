"""What ``convzoo.ops`` pays for returning ``F.conv2d``'s memory format instead of the order its algorithm leaves.

    python benchmarks/bench_layout.py                  # one thread, 7 rounds
    python benchmarks/bench_layout.py --threads 2 --out benchmarks/results/bench_layout_2t.json

``conv2d``'s im2col product leaves its output in ``(C_out, N, H, W)`` memory order and the pools
leave ``(C, N, H, W)``; PyTorch's operators return contiguous NCHW (or channels-last). Each row
times forward + backward of the *native* order (the internal ``_conv2d``; the pooling reduction
without the final copy) against the public function, interleaved round by round so that load on
a shared machine hits both; the table shows the best round's median of each. The two network rows
build the scratch backend once with layers patched to the native order and once as shipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the convzoo command and bench_ops.py

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from convzoo import layers, ops
from convzoo.fileio import write_json
from convzoo.models import create_model
from convzoo.ops import conv, pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_layout.json"
Step = Callable[[], None]


def native_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):  # noqa: ANN001
    return conv._conv2d(x, w, b, stride, padding, dilation, groups, padding_mode, "auto")


def native_max_pool2d(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):  # noqa: ANN001
    windows = pool._pool_windows(x, kernel, stride, padding, dilation, ceil_mode, float("-inf"))
    return windows.max(1).values.transpose(0, 1)


class NativeConv2d(layers.Conv2d):
    def _conv_forward(self, input, weight, bias):  # noqa: ANN001
        padding = self.padding if isinstance(self.padding, str) else tuple(self.padding)
        return native_conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups, self.padding_mode)


class NativeMaxPool2d(layers.MaxPool2d):
    def forward(self, input):  # noqa: ANN001
        return native_max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


def backward_of(f: Callable[..., torch.Tensor], *tensors: torch.Tensor, **kwargs: object) -> Step:
    def step() -> None:
        out = f(*tensors, **kwargs)
        out.backward(torch.ones_like(out))
    return step


def conv_row(n: int, c_in: int, c_out: int, size: int, k: int, p: int = 0) -> tuple[Step, Step]:
    shapes = ((n, c_in, size, size), (c_out, c_in, k, k), (c_out,))
    x, w, b = (torch.randn(*shape, requires_grad=True) for shape in shapes)
    return backward_of(native_conv2d, x, w, b, padding=p), backward_of(ops.conv2d, x, w, b, padding=p)


def pool_row(shape: tuple[int, ...]) -> tuple[Step, Step]:
    x = torch.randn(*shape, requires_grad=True)
    return backward_of(native_max_pool2d, x, 3, 2), backward_of(ops.max_pool2d, x, 3, 2)


def network_row(name: str, size: int, batch: int) -> tuple[Step, Step]:
    def build(native: bool) -> Step:
        torch.manual_seed(0)
        net = create_model(name, backend="scratch", input_size=size)
        for module in net.modules():
            if native and type(module) is layers.Conv2d:
                module.__class__ = NativeConv2d
            if native and type(module) is layers.MaxPool2d:
                module.__class__ = NativeMaxPool2d
        x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))

        def step() -> None:
            net.zero_grad()
            F.cross_entropy(net(x), y).backward()
        return step
    return build(True), build(False)


ROWS = {  # name: (native, as shipped), calls per round
    "LeNet conv1 256x1x28x28, 6 @ 5x5 pad 2 (FFT)": (lambda: conv_row(256, 1, 6, 28, 5, 2), 5),
    "LeNet conv2 256x6x14x14, 16 @ 5x5 (FFT)": (lambda: conv_row(256, 6, 16, 14, 5), 5),
    "AlexNet conv2 16x96x26x26, 256 @ 5x5 pad 2 (im2col)": (lambda: conv_row(16, 96, 256, 26, 5, 2), 2),
    "AlexNet conv3 16x256x12x12, 384 @ 3x3 pad 1 (im2col)": (lambda: conv_row(16, 256, 384, 12, 3, 1), 2),
    "AlexNet max-pool 16x96x54x54, 3x3 stride 2": (lambda: pool_row((16, 96, 54, 54)), 5),
    "scratch LeNet, a training step at batch 256": (lambda: network_row("lenet", 28, 256), 5),
    "scratch AlexNet at 96x96, a training step at batch 32": (lambda: network_row("alexnet", 96, 32), 1),
}


def best_median(step: Step, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, (make, calls) in ROWS.items():
        native, shipped = make()
        native(), shipped()  # warm-up
        samples: dict[str, list[float]] = {"native": [], "torch_format": []}
        for _ in range(args.rounds):
            samples["native"].append(best_median(native, calls))
            samples["torch_format"].append(best_median(shipped, calls))
        best = {key: min(values) for key, values in samples.items()}
        rows.append({"row": name, "native_ms": best["native"] * 1e3, "torch_format_ms": best["torch_format"] * 1e3,
                     "ratio": best["torch_format"] / best["native"], "samples_s": samples})
        print(f"{name:<54} native {best['native'] * 1e3:8.2f} ms  F's format {best['torch_format'] * 1e3:8.2f} ms  "
              f"ratio {best['torch_format'] / best['native']:.3f}", flush=True)
    write_json(args.out, {**machine_info(), "rounds": args.rounds, "load_average": os.getloadavg(), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
