"""Forward + backward time of ``convzoo.ops`` against PyTorch's kernels, on the layers of LeNet and AlexNet.

    python benchmarks/bench_ops.py                      # all rows, 10 repeats, torch's default threads
    python benchmarks/bench_ops.py --threads 1 --repeats 9 --out benchmarks/results/bench_ops_1t.json

One timed step is ``out = f(x, weight, bias); out.backward(ones_like(out))`` with ``x``, ``weight``
and ``bias`` all requiring grad, so the input gradient is computed too (as for every layer but the
first of a network). Each row is warmed up, then the two sides run interleaved (ours, baseline,
ours, baseline, ...) so that drift in clock speed or background load hits both alike; the table
shows medians. The seed's ``corr2d_loop`` takes seconds per step, so it runs only
``--loop-repeats`` times, against many runs of the vectorised ``corr2d``.

float32 throughout: the dtype the models train in. The JSON written to ``--out`` holds the
hardware, versions, command line and every sample.
"""

from __future__ import annotations

import os

# Large CPU tensors on transparent huge pages (a PyTorch allocator switch, read once when torch
# starts): the column matrices of im2col are ~100 MB per call, and 4 KB page faults on fresh
# buffers of that size cost ~20% of a step. Both sides run in this process with the same setting.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from convzoo import ops
from convzoo.fileio import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_ops.json"


@dataclass
class Case:
    layer: str
    config: str
    baseline: str
    ours: Callable[..., torch.Tensor]
    theirs: Callable[..., torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    theirs_repeats: int | None = None  # None: as many as ours
    warmup: bool = True  # of the baseline; ours is always warmed up


def conv_case(layer: str, n: int, c_in: int, c_out: int, size: int, k: int, s: int = 1, p: int = 0) -> Case:
    x = torch.randn(n, c_in, size, size)
    w = torch.randn(c_out, c_in, k, k) / (c_in * k * k) ** 0.5
    b = torch.zeros(c_out)
    return Case(
        layer, f"{c_in}->{c_out} k{k} s{s} p{p}", "F.conv2d",
        lambda x, w, b: ops.conv2d(x, w, b, s, p), lambda x, w, b: F.conv2d(x, w, b, s, p), (x, w, b),
    )


def pool_case(layer: str, kind: str, shape: tuple[int, ...], k: int, s: int) -> Case:
    ours, theirs = (ops.max_pool2d, F.max_pool2d) if kind == "max" else (ops.avg_pool2d, F.avg_pool2d)
    return Case(
        layer, f"{kind}-pool k{k} s{s}", f"F.{kind}_pool2d",
        lambda x: ours(x, k, s), lambda x: theirs(x, k, s), (torch.randn(shape),),
    )


def cases(loop_repeats: int) -> list[Case]:
    return [
        conv_case("LeNet conv1", 256, 1, 6, 28, 5, p=2),
        conv_case("LeNet conv2", 256, 6, 16, 14, 5),
        pool_case("LeNet pool1", "avg", (256, 6, 28, 28), 2, 2),
        pool_case("LeNet pool2", "avg", (256, 16, 10, 10), 2, 2),
        conv_case("AlexNet conv1", 16, 1, 96, 224, 11, s=4, p=1),
        conv_case("AlexNet conv2", 16, 96, 256, 26, 5, p=2),
        conv_case("AlexNet conv3", 16, 256, 384, 12, 3, p=1),
        conv_case("AlexNet conv4", 16, 384, 384, 12, 3, p=1),
        conv_case("AlexNet conv5", 16, 384, 256, 12, 3, p=1),
        pool_case("AlexNet pool1", "max", (16, 96, 54, 54), 3, 2),
        pool_case("AlexNet pool2", "max", (16, 256, 26, 26), 3, 2),
        pool_case("AlexNet pool3", "max", (16, 256, 12, 12), 3, 2),
        Case(
            "seed corr2d", "k3 vectorised vs loop", "corr2d_loop", ops.corr2d, ops.corr2d_loop,
            (torch.randn(224, 224), torch.randn(3, 3)), theirs_repeats=loop_repeats, warmup=False,
        ),
    ]


def step(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> float:
    """Seconds for one forward and backward pass of ``fn``."""
    for t in inputs:
        t.grad = None
    start = time.perf_counter()
    out = fn(*inputs)
    out.backward(torch.ones_like(out))
    return time.perf_counter() - start


def measure(case: Case, repeats: int) -> dict:
    inputs = tuple(t.requires_grad_() for t in case.inputs)
    with torch.no_grad():
        ours_out = case.ours(*inputs)
        max_abs_diff = (ours_out - case.theirs(*inputs)).abs().max().item()
    step(case.ours, inputs)
    if case.warmup:
        step(case.theirs, inputs)
    ours_repeats, theirs_repeats = repeats, repeats
    if case.theirs_repeats is not None:  # a slow baseline: fewer of its runs, more of ours (cheap)
        ours_repeats, theirs_repeats = 10 * repeats, case.theirs_repeats
    ours_s: list[float] = []
    theirs_s: list[float] = []
    for i in range(max(ours_repeats, theirs_repeats)):
        if i < ours_repeats:
            ours_s.append(step(case.ours, inputs))
        if i < theirs_repeats:
            theirs_s.append(step(case.theirs, inputs))
    ours_ms, theirs_ms = statistics.median(ours_s) * 1e3, statistics.median(theirs_s) * 1e3
    return {
        "layer": case.layer,
        "config": case.config,
        "shape": "x".join(map(str, inputs[0].shape)) + " -> " + "x".join(map(str, ours_out.shape)),
        "baseline": case.baseline,
        "ours_ms": ours_ms,
        "baseline_ms": theirs_ms,
        "ratio": ours_ms / theirs_ms,
        "ours_samples_ms": [t * 1e3 for t in ours_s],
        "baseline_samples_ms": [t * 1e3 for t in theirs_s],
        "max_abs_diff": max_abs_diff,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per side and row (default 10)")
    parser.add_argument("--loop-repeats", type=int, default=2, help="timed steps of the slow corr2d_loop (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.loop_repeats < 1:
        parser.error("--repeats and --loop-repeats must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    meta = {
        **machine_info(),
        "repeats": args.repeats,
        "loop_repeats": args.loop_repeats,
        "timed": "forward + backward (input, weight and bias gradients), float32, median over repeats",
    }
    print(f"torch {meta['torch']}, python {meta['python']}, {meta['cpu']}, {meta['threads']} threads")
    header = f"{'layer':<14} {'config':<22} {'shape':<34} {'baseline':<13} {'ours ms':>9} {'base ms':>9} {'ratio':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for case in cases(args.loop_repeats):
        row = measure(case, args.repeats)
        rows.append(row)
        print(
            f"{row['layer']:<14} {row['config']:<22} {row['shape']:<34} {row['baseline']:<13} "
            f"{row['ours_ms']:>9.2f} {row['baseline_ms']:>9.2f} {row['ratio']:>8.3g}",
            flush=True,
        )
    meta["loadavg_end"] = os.getloadavg()
    write_json(args.out, {**meta, "rows": rows})
    print(f"ratio = ours / baseline (median ms); wrote {args.out}")


if __name__ == "__main__":
    main()
