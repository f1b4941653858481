"""Time to accuracy: convzoo's training against the book's pipeline, measured in one run.

    python benchmarks/bench_train.py --model lenet --recipe d2l --baseline     # the book's LeNet, both pipelines
    python benchmarks/bench_train.py --model lenet_modern --recipe fast --target 0.91 --seeds 3
    python benchmarks/bench_train.py --model alexnet --device cuda --baseline --amp

Each measured run trains ``--model`` with ``--recipe`` (flags override it, as in ``convzoo train``)
from a fresh process state, once per seed, after one warm-up run that is not counted. A run's
clock starts before the data is loaded and stops when its last file is written: end to end.
Reported per pipeline: mean +- std over seeds of the wall seconds, of the seconds to reach
``--target`` test accuracy (the end of the first epoch at or above it), the final test
accuracy, training examples/s (mean over epochs, and ``steady``: the last epoch's, after any
compilation and autotuning), achieved TFLOP/s at the steady rate (6 x MACs per example:
forward + backward, 2 FLOPs per MAC) and, on a GPU with a known peak, the fraction of its dense
bf16 peak (MFU).

``--baseline`` also runs the book's pipeline (``d2l.load_data_fashion_mnist`` + ``train_ch6``
style, written here from that description): torchvision's ``FashionMNIST`` with ``Resize`` +
``ToTensor`` transforms, a ``DataLoader`` with 4 workers, a plain float32 loop, the same model,
initialisation, optimizer and learning rate, with evaluation through a DataLoader each epoch.
``--baseline-epochs K`` runs K of its epochs and projects the rest at their pace, for GPU
sessions too short to run it all (the table marks projected times with ``*``).
torchvision is a benchmark-only dependency: see benchmarks/README.md for its environment.
"""

from __future__ import annotations

import os

# As the `convzoo` command does: large CPU tensors on transparent huge pages (read when torch starts).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import dataclasses
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from convzoo.config import TrainConfig, recipe
from convzoo.data import FILES, find_data_dir
from convzoo.fileio import write_json
from convzoo.network import build_model
from convzoo.optim import make_optimizer
from convzoo.runtime import resolve_device
from convzoo.summary import summarize_model
from convzoo.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import gpu_peak_tflops, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_convzoo(config: TrainConfig, workdir: Path) -> dict:
    """One ``convzoo.train.fit`` run; the log callback marks the end of every epoch."""
    stamps: list[float] = []
    start = time.perf_counter()
    result = fit(config, workdir, overwrite=True, progress=False, log=lambda _line: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - start
    history = result.history
    return {
        "wall_seconds": wall,
        "epoch_end_seconds": [s - start for s in stamps],
        "test_acc": [row["test_acc"] for row in history],
        "epoch_examples_per_sec": [row["examples_per_sec"] for row in history],
        "eval_seconds": [row["eval_seconds"] for row in history],
    }


def _torchvision_root(workdir: Path) -> Path:
    """torchvision's FashionMNIST layout (root/FashionMNIST/raw/<uncompressed files>) from our data."""
    raw = workdir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    source = find_data_dir()
    for images, labels in FILES.values():
        for name in (images, labels):
            target = raw / name
            if target.exists():
                continue
            gz = source / f"{name}.gz"
            if gz.exists():
                with gzip.open(gz, "rb") as f_in, open(target, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
            else:
                shutil.copy(source / name, target)
    return workdir


def run_baseline(config: TrainConfig, workdir: Path, workers: int, epochs: int | None = None) -> dict:
    """The book's pipeline: PIL transforms in DataLoader workers, ``train_ch6``'s plain float32 loop.

    As ``train_ch6`` does, every step adds the batch's loss and correct count to a host-side
    accumulator (two device reads per step) and every epoch ends with ``evaluate_accuracy_gpu``
    (one read per test batch). With ``epochs`` fewer than ``config.epochs`` only that many run and
    ``projected_wall_seconds`` extends the measured time to ``config.epochs`` at the mean pace of
    epochs 2 and later (epoch 1 carries the start-up).
    """
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    start = time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    trans = [transforms.Resize(config.input_size)] if config.input_size != 28 else []
    trans = transforms.Compose([*trans, transforms.ToTensor()])
    root = _torchvision_root(workdir)
    train_set = datasets.FashionMNIST(root=str(root), train=True, transform=trans, download=False)
    test_set = datasets.FashionMNIST(root=str(root), train=False, transform=trans, download=False)
    if config.limit_train:
        train_set = Subset(train_set, range(min(config.limit_train, len(train_set))))
    if config.limit_test:
        test_set = Subset(test_set, range(min(config.limit_test, len(test_set))))
    train_iter = DataLoader(train_set, config.batch_size, shuffle=True, num_workers=workers)
    test_iter = DataLoader(test_set, config.batch_size, shuffle=False, num_workers=workers)

    model = build_model(dataclasses.replace(config, channels_last=False), device)  # the book's NCHW
    optimizer = make_optimizer(model, config)
    loss_fn = nn.CrossEntropyLoss()
    run_epochs = min(epochs or config.epochs, config.epochs)
    stamps, accuracies, rates = [], [], []
    for _ in range(run_epochs):
        model.train()
        metric = [0.0, 0.0, 0]  # loss sum, correct, examples: d2l.Accumulator(3)
        train_time = 0.0
        for x, y in train_iter:
            step_start = time.perf_counter()
            optimizer.zero_grad()
            x, y = x.to(device), y.to(device)
            y_hat = model(x)
            loss = loss_fn(y_hat, y)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                metric[0] += float(loss) * len(y)
                metric[1] += float((y_hat.argmax(1) == y).sum())
                metric[2] += len(y)
            train_time += time.perf_counter() - step_start  # the book's timer: compute only
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in test_iter:
                x, y = x.to(device), y.to(device)
                correct += float((model(x).argmax(1) == y).sum())
                total += len(y)
        stamps.append(time.perf_counter() - start)
        accuracies.append(correct / total)
        rates.append(metric[2] / train_time)
    wall = time.perf_counter() - start
    run = {"wall_seconds": wall, "epoch_end_seconds": stamps, "test_acc": accuracies,
           "epoch_examples_per_sec": rates, "epochs_run": run_epochs}
    if run_epochs < config.epochs:
        if run_epochs < 2:
            raise SystemExit("error: --baseline-epochs must be at least 2 to project a run")
        pace = (stamps[-1] - stamps[0]) / (run_epochs - 1)
        run["projected_wall_seconds"] = stamps[0] + pace * (config.epochs - 1)
        run["wall_seconds"] = run["projected_wall_seconds"]
        run["measured_wall_seconds"] = wall
    return run


def _mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarize(runs: list[dict], target: float, macs: int, device: torch.device) -> dict:
    """Mean +- std over runs. Throughput is the mean over epochs; ``steady`` is the last epoch's (after
    any compilation and autotuning), from which TFLOP/s and MFU are computed as well."""
    for run in runs:
        reached = [t for t, acc in zip(run["epoch_end_seconds"], run["test_acc"]) if acc >= target]
        run["seconds_to_target"] = reached[0] if reached else None
        run["final_test_acc"] = run["test_acc"][-1]
        run["train_examples_per_sec"] = statistics.fmean(run["epoch_examples_per_sec"])
        run["steady_examples_per_sec"] = run["epoch_examples_per_sec"][-1]
        run["tflops"] = 6 * macs * run["train_examples_per_sec"] / 1e12
        run["steady_tflops"] = 6 * macs * run["steady_examples_per_sec"] / 1e12
    out = {key: _mean_std([r[key] for r in runs]) for key in
           ("wall_seconds", "seconds_to_target", "final_test_acc", "train_examples_per_sec",
            "steady_examples_per_sec", "tflops", "steady_tflops")}
    out["reached_target"] = sum(r["seconds_to_target"] is not None for r in runs)
    out["projected"] = any("projected_wall_seconds" in r for r in runs)
    peak = gpu_peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    out["peak_bf16_tflops"] = peak
    out["mfu"] = out["tflops"]["mean"] / peak if peak and out["tflops"]["mean"] else None
    out["steady_mfu"] = out["steady_tflops"]["mean"] / peak if peak and out["steady_tflops"]["mean"] else None
    out["runs"] = runs
    return out


def _fmt(stat: dict, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.{digits}f} +- {stat['std']:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--recipe", default="d2l")
    parser.add_argument("--seeds", type=int, default=3, help="measured runs, seeds 0..N-1 (default 3)")
    parser.add_argument("--target", type=float, default=None, help="test accuracy to time (default: none)")
    parser.add_argument("--baseline", action="store_true", help="also run the book's pipeline (needs torchvision)")
    parser.add_argument("--only-baseline", action="store_true", help="run only the book's pipeline")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the baseline (default 4)")
    parser.add_argument("--baseline-epochs", type=int, default=None,
                        help="run only this many baseline epochs (>= 2) and project the rest at their pace")
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/...)")
    # Recipe overrides, as `convzoo train` takes them.
    values = (("epochs", int), ("batch-size", int), ("lr", float), ("resize", int), ("device", str),
              ("limit-train", int), ("limit-test", int), ("eval-batch-size", int), ("init", str),
              ("momentum", float), ("weight-decay", float), ("label-smoothing", float), ("schedule", str))
    switches = ("amp", "compile", "channels-last", "cuda-graphs", "autotune", "augment", "tta")
    for flag, kind in values:
        parser.add_argument(f"--{flag}", type=kind, default=None)
    for flag in switches:
        parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)

    def config_for(seed: int, **extra: object) -> TrainConfig:
        fields = [flag.replace("-", "_") for flag, _ in values] + [flag.replace("-", "_") for flag in switches]
        overrides = {name: getattr(args, name) for name in fields}
        return recipe(args.model, args.recipe, **{**overrides, "seed": seed, **extra})

    base = config_for(0)
    device = resolve_device(base.device)
    macs = summarize_model(args.model, input_size=base.input_size).total_macs
    meta = {**machine_info(), "model": args.model, "recipe": args.recipe, "config": vars(base) | {"seed": None},
            "target": args.target, "macs_per_example": macs}
    print(f"{args.model} / {args.recipe}: {base.epochs} epochs, batch {base.batch_size}, lr {base.lr}, "
          f"input {base.input_size}, device {device} ({meta['gpu'] or meta['cpu']}, torch {meta['torch']})", flush=True)

    pipelines = []
    if not args.only_baseline:
        pipelines.append(("convzoo", lambda cfg, work, warm=False: run_convzoo(cfg, work / "run")))
    if args.baseline or args.only_baseline:
        pipelines.append(("baseline", lambda cfg, work, warm=False: run_baseline(
            cfg, work, args.workers, None if warm else args.baseline_epochs)))
    target = args.target if args.target is not None else 1.01
    results = {}
    warmups = {}
    with tempfile.TemporaryDirectory(prefix="convzoo-bench-") as tmp:
        work = Path(tmp)
        for name, run in pipelines:
            if not args.no_warmup:  # caches, allocator, cuDNN autotuning, compilation, worker start-up paths
                warm_start = time.perf_counter()
                # About 4,096 images, ending with a partial batch of the measured runs' size: its shapes are
                # autotuned (and compiled) here, not in the measured first epoch.
                n = base.limit_train or 60_000
                warm = min(n, 4096 // base.batch_size * base.batch_size + n % base.batch_size)
                run(config_for(0, epochs=1, limit_train=warm), work, warm=True)
                warmups[name] = time.perf_counter() - warm_start
                print(f"  {name} warm-up: {warmups[name]:.1f} s", flush=True)
            runs = []
            for seed in range(args.seeds):
                runs.append(run(config_for(seed), work))
                last = runs[-1]
                projected = (f" (projected from {last['epochs_run']} epochs measured in "
                             f"{last['measured_wall_seconds']:.1f} s)" if "projected_wall_seconds" in last else "")
                print(f"  {name} seed {seed}: {runs[-1]['wall_seconds']:.1f} s{projected}, "
                      f"test acc {runs[-1]['test_acc'][-1]:.4f}, epochs at "
                      f"{', '.join(f'{t:.1f}' for t in runs[-1]['epoch_end_seconds'])} s", flush=True)
            results[name] = summarize(runs, target, macs, device)
            results[name]["warmup_seconds"] = warmups.get(name)  # with --compile, mostly compilation

    print(f"\n{'pipeline':<10} {'wall s':>16} {'to target s':>16} {'test acc':>18} {'train ex/s':>20} "
          f"{'steady ex/s':>20} {'TFLOP/s':>14} {'MFU':>6}")
    for name, r in results.items():
        mfu = f"{r['steady_mfu']:.1%}" if r["steady_mfu"] else "-"
        wall = _fmt(r["wall_seconds"]) + ("*" if r["projected"] else "")
        print(f"{name:<10} {wall:>16} {_fmt(r['seconds_to_target']):>16} "
              f"{_fmt(r['final_test_acc'], 4):>18} {_fmt(r['train_examples_per_sec'], 0):>20} "
              f"{_fmt(r['steady_examples_per_sec'], 0):>20} {_fmt(r['steady_tflops'], 3):>14} {mfu:>6}")
    if any(r["projected"] for r in results.values()):
        print(f"* projected to {base.epochs} epochs from {args.baseline_epochs} measured ones")
    if "convzoo" in results and "baseline" in results:
        speedup = results["baseline"]["wall_seconds"]["mean"] / results["convzoo"]["wall_seconds"]["mean"]
        meta["speedup_end_to_end"] = speedup
        print(f"speed-up, end to end (baseline wall / convzoo wall): {speedup:.2f}x")
    if args.target is not None:
        reached = ", ".join(f"{name} {r['reached_target']}/{args.seeds}" for name, r in results.items())
        print(f"target {args.target}: reached in {reached} runs")
    meta["loadavg_end"] = list(os.getloadavg())
    out = args.out or RESULTS / f"bench_train_{args.model}_{args.recipe}_{device.type}.json"
    write_json(out, {**meta, "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
