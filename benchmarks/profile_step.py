"""Where a training step's time goes: torch.profiler over convzoo's own step, per operator.

    python benchmarks/profile_step.py --model lenet                      # the book's LeNet, CPU
    python benchmarks/profile_step.py --model lenet_modern --amp --no-channels-last
    python benchmarks/profile_step.py --model alexnet --device cuda --amp --trace alexnet.json

Builds the model and optimizer as ``convzoo train`` does for ``--recipe``, feeds it batches
from ``convzoo.data.Batches`` (the real data when it is installed, random pixels otherwise),
runs ``--warmup`` steps, then profiles ``--steps`` steps and prints the operators sorted by
their own time, the steady examples/s, and optionally writes a Chrome trace (open it in
chrome://tracing or https://ui.perfetto.dev).
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the `convzoo` command does

import argparse
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from convzoo.config import recipe
from convzoo.data import Batches, DataError, load_split
from convzoo.network import build_model
from convzoo.optim import make_optimizer
from convzoo.runtime import compute_settings, resolve_device, uses_cuda_graphs
from convzoo.step import TrainStep


def batches(config, device: torch.device) -> Batches:  # noqa: ANN001
    try:
        images, labels = load_split("train", config.data_dir)
    except DataError:
        images = torch.randint(0, 256, (4096, 28, 28), dtype=torch.uint8)
        labels = torch.randint(0, 10, (4096,))
    return Batches(images, labels, config.batch_size, shuffle=True, device=device, resize=config.input_size,
                   augment=config.augment, drop_last=True, channels_last=config.channels_last)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--recipe", default="d2l")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rows", type=int, default=20, help="operators to print")
    parser.add_argument("--trace", default=None, help="write a Chrome trace to this file")
    for flag, kind in (("batch-size", int), ("resize", int), ("device", str), ("threads", int)):
        parser.add_argument(f"--{flag}", type=kind, default=None)
    for flag in ("amp", "compile", "channels-last", "cuda-graphs"):
        parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    config = recipe(args.model, args.recipe, batch_size=args.batch_size, resize=args.resize, device=args.device,
                    amp=args.amp, compile=args.compile, channels_last=args.channels_last, threads=args.threads,
                    cuda_graphs=args.cuda_graphs)
    with compute_settings(config):  # threads, cuDNN autotuning and TF32 as in training
        profile_step(config, args)


def profile_step(config, args: argparse.Namespace) -> None:  # noqa: ANN001
    device = resolve_device(config.device)
    model = build_model(config, device)
    graphs = uses_cuda_graphs(config, device)
    optimizer = make_optimizer(model, config, device=device, graphable=graphs)
    net = torch.compile(model) if config.compile else model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    data = batches(config, device)
    step = TrainStep(net, loss_fn, optimizer, device, amp=config.amp, cuda_graph=graphs)  # as fit's

    def run(n: int) -> float:
        seen, it = 0, iter(data)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(n):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(data)
                x, y = next(it)
            step(x, y)
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return seen / (time.perf_counter() - start)

    run(args.warmup)
    rate = run(args.steps)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run(args.steps)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    print(f"{config.model} / {config.recipe}: batch {config.batch_size}, input {config.input_size}, device {device}, "
          f"amp {config.amp}, channels_last {config.channels_last}, compile {config.compile}, "
          f"cuda_graphs {graphs}, "
          f"{torch.get_num_threads()} threads: {rate:,.0f} examples/s without the profiler")
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"wrote {args.trace}")


if __name__ == "__main__":
    main()
