"""Every GPU measurement of the speed issue in one run that fits a time budget.

    CONVZOO_DATA=data/fashion-mnist PYTHONPATH=src python benchmarks/gpu_suite.py --out results-dir
    PYTHONPATH=src python benchmarks/gpu_suite.py --tiny --out /tmp/suite     # rehearsal on the CPU

Runs ``bench_train.py`` once per item, each in its own process (a crash or an out-of-memory
error costs one item, not the session), in order of importance, and skips what the remaining
``--budget`` cannot fit. Items:

* the book's recipe (``d2l``, 10 epochs, the book's input size) for LeNet, GoogLeNet, AlexNet,
  VGG-11/4 and NiN, convzoo against the book's pipeline in the same process; the 224x224
  baselines run ``--baseline-epochs`` epochs and are projected to 10 (marked ``*``);
* the ``fast`` recipe to 0.93 test accuracy, after a warm-up;
* AlexNet's throughput at a large batch with ``torch.compile`` (MFU against the GPU's dense bf16
  peak).

convzoo trains with ``--cuda-graphs`` (but for the compiled item); each item's flags and the
comment above it say what else it switches and why.

``--out`` gets three files, rewritten after each item so that a session cut short keeps what
it measured (and few, since a lent machine returns a limited number of files): ``suite.json``
(every item's ``bench_train.py`` JSON and the environment), ``suite.log`` (the console output)
and ``summary.md`` (the table).
``--tiny`` shrinks every item (CPU, a few hundred images, small inputs) to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from convzoo.fileio import write_json

HERE = Path(__file__).resolve().parent

# (item, minimum seconds worth starting it with, bench_train.py arguments)
D2L = ["--recipe", "d2l", "--seeds", "1", "--cuda-graphs", "--baseline"]
FAST = ["--recipe", "fast", "--seeds", "1", "--cuda-graphs", "--no-autotune", "--target", "0.93"]
ITEMS: list[tuple[str, int, list[str]]] = [
    # LeNet is launch-bound: float32 and NCHW run its tiny layers fastest (690k vs 610k ex/s with bf16, NHWC).
    ("lenet_d2l", 25, ["--model", "lenet", *D2L, "--no-amp", "--no-channels-last"]),
    # GoogLeNet's 57 convolution shapes cost 10 s of cuDNN autotuning in epoch 1 for a 5 % faster step.
    ("googlenet_d2l", 60, ["--model", "googlenet", *D2L, "--amp", "--no-autotune", "--baseline-epochs", "2"]),
    ("resnet18_fast_r48", 15, ["--model", "resnet18", *FAST, "--batch-size", "512", "--lr", "0.2", "--epochs", "8",
                               "--resize", "48"]),
    ("resnet18_fast_e6", 15, ["--model", "resnet18", *FAST, "--batch-size", "512", "--lr", "0.2", "--epochs", "6"]),
    # Next: 0.93 in 5 s or less (6 epochs at 64 px reached it at 5.05 s, 8 at 48 px at 5.35 s).
    ("resnet18_fast_r56", 15, ["--model", "resnet18", *FAST, "--batch-size", "512", "--lr", "0.2", "--epochs", "6",
                               "--resize", "56"]),
    ("alexnet_d2l", 55, ["--model", "alexnet", *D2L, "--amp", "--baseline-epochs", "2"]),
    ("vgg11_small_d2l", 75, ["--model", "vgg11_small", *D2L, "--amp", "--baseline-epochs", "2"]),
    ("nin_d2l", 60, ["--model", "nin", *D2L, "--amp", "--baseline-epochs", "2"]),
    # Not run in the last session (its device time ran out); large-batch throughput, compiled.
    ("alexnet_mfu_compile", 45, ["--model", "alexnet", "--recipe", "d2l", "--seeds", "1", "--amp", "--compile",
                                 "--batch-size", "512", "--epochs", "2", "--limit-train", "30720",
                                 "--limit-test", "2000"]),
]

# --tiny: the smallest inputs each model accepts comfortably, a few hundred images, 2 epochs, CPU.
TINY_SIZE = {"lenet": 28, "alexnet": 67, "vgg11_small": 32, "nin": 67, "googlenet": 32, "resnet18": 32}
TINY = ["--device", "cpu", "--epochs", "2", "--limit-train", "256", "--limit-test", "128", "--workers", "2"]


def tiny_args(args: list[str]) -> list[str]:
    """``args`` shrunk for a CPU rehearsal (later flags win in argparse)."""
    model = args[args.index("--model") + 1]
    args = [a for a in args if a != "--compile"]  # a CPU compile needs a C++ toolchain; the test suite covers it
    return [*args, *TINY, "--resize", str(TINY_SIZE[model]), "--batch-size", "64"]


def _fmt(stat: dict | None, digits: int = 1) -> str:
    return "-" if not stat or stat.get("mean") is None else f"{stat['mean']:.{digits}f}"


def summary_rows(items: dict[str, dict]) -> list[str]:
    rows = ["| item | convzoo wall s | baseline wall s | speed-up | test acc | to target s | steady ex/s | "
            "steady TFLOP/s | MFU |", "|---|---|---|---|---|---|---|---|---|"]
    for name, data in items.items():
        ours, base = data["results"].get("convzoo"), data["results"].get("baseline")
        base_wall = _fmt(base["wall_seconds"]) + ("*" if base and base.get("projected") else "") if base else "-"
        speedup = f"{data['speedup_end_to_end']:.1f}x" if data.get("speedup_end_to_end") else "-"
        mfu = f"{ours['steady_mfu']:.1%}" if ours.get("steady_mfu") else "-"
        rows.append(f"| {name} | {_fmt(ours['wall_seconds'])} | {base_wall} | {speedup} | "
                    f"{_fmt(ours['final_test_acc'], 4)} | {_fmt(ours['seconds_to_target'])} | "
                    f"{_fmt(ours['steady_examples_per_sec'], 0)} | {_fmt(ours['steady_tflops'])} | {mfu} |")
    return rows


def environment() -> str:
    lines = [f"python {platform.python_version()} on {platform.platform()}"]
    for command in (["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv"],
                    [sys.executable, "-c", "import torch, torchvision; print('torch', torch.__version__, "
                     "'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), "
                     "'torchvision', torchvision.__version__)"]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            lines.append((result.stdout + result.stderr).strip())
        except (OSError, subprocess.SubprocessError) as exc:
            lines.append(f"{command[0]}: {exc}")
    lines.append(f"nproc {os.cpu_count()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON, logs and summary.md")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole suite (default 450)")
    parser.add_argument("--tiny", action="store_true", help="a quick CPU rehearsal of every item")
    parser.add_argument("--only", nargs="*", default=None, help="run only these items")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = environment()
    suite: dict = {"environment": env, "budget_seconds": args.budget, "items": {}}
    log = open(args.out / "suite.log", "w")

    def say(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    say(env)
    status = 0
    with log, tempfile.TemporaryDirectory(prefix="convzoo-suite-") as tmp:
        for name, needs, item_args in ITEMS:
            if args.only is not None and name not in args.only:
                continue
            left = args.budget - (time.perf_counter() - start)
            if left < needs and not args.tiny:
                say(f"== {name}: skipped, {left:.0f} s left of the budget")
                continue
            bench_args = tiny_args(item_args) if args.tiny else item_args
            result = Path(tmp) / f"{name}.json"
            command = [sys.executable, str(HERE / "bench_train.py"), *bench_args, "--out", str(result)]
            say(f"== {name} ({left:.0f} s left): {' '.join(bench_args)}")
            item_start = time.perf_counter()
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            watchdog = threading.Timer(max(left, 1), proc.kill)  # the budget holds even if an item hangs
            watchdog.start()
            for line in proc.stdout:  # type: ignore[union-attr]
                if "UserWarning" not in line and "check_worker_number_rationality" not in line:
                    say(f"   {line.rstrip()}")
            proc.wait()
            watchdog.cancel()
            if proc.returncode != 0 or not result.is_file():
                status = 1
                say(f"== {name}: FAILED (exit {proc.returncode})")
            else:
                suite["items"][name] = json.loads(result.read_text())
            say(f"== {name}: {time.perf_counter() - item_start:.1f} s")
            write_json(args.out / "suite.json", suite)
            (args.out / "summary.md").write_text("\n".join(summary_rows(suite["items"])) + "\n")
        say("\n".join(summary_rows(suite["items"])))
        say(f"suite: {time.perf_counter() - start:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
