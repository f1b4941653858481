"""A busy machine: convzoo's own thread choice against --threads 1 and --threads 2, quiet and under load.

    nice python benchmarks/bench_busy.py                      # 2 rounds, quiet then loaded (several minutes)
    python benchmarks/bench_busy.py --rounds 3 --epochs 1

Each run is ``convzoo train lenet --epochs 2`` (the book's LeNet, the d2l recipe, the whole
Fashion-MNIST) in a process of its own, with convzoo's choice (no ``--threads``), with
``--threads 1`` and with ``--threads 2``: interleaved, the three once per round, the order reversed
every other round so that a drift in the machine's other work falls on each alike. First on the
machine as it is ("quiet": whatever else runs on it, its load average is recorded), then under a
synthetic load this script starts and stops itself: ``--load-processes`` processes (2), each
running a loop of 512x512 float32 matmuls with ``torch.set_num_threads(--load-threads)`` (2),
bounded in time (they end on their own after ``--load-seconds`` should this script die).

Recorded per run: the training seconds the command reports (``train_seconds``: the epochs, data
loading and evaluation excluded), the command's wall seconds, the test accuracy, and for the
choice the line ``convzoo.runtime.thread_choice`` printed just before it started. The claim:
under load, the choice's training time is within 10% of the better of the other two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHOICES = {"choice": [], "threads 1": ["--threads", "1"], "threads 2": ["--threads", "2"]}


def load_worker(threads: int, seconds: float) -> None:
    """The synthetic load: matmuls on ``threads`` threads until ``seconds`` have passed."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(512, 512)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        a = torch.tanh(a @ a)


def start_load(processes: int, threads: int, seconds: float) -> list[subprocess.Popen]:
    command = [sys.executable, __file__, "--load-worker", str(threads), "--load-seconds", str(seconds)]
    return [subprocess.Popen(command) for _ in range(processes)]


def stop_load(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout=30)


def thread_choice_line() -> str:
    """What convzoo's choice would say now (the run makes its own, a moment later)."""
    from convzoo.config import recipe
    from convzoo.runtime import thread_choice

    return thread_choice(recipe("lenet"))[1]


def train_once(flags: list[str], epochs: int, out: Path) -> dict:
    command = [sys.executable, "-m", "convzoo", "train", "lenet", "--epochs", str(epochs), "--out", str(out),
               "--overwrite", "--json", *flags]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"train_seconds": result["train_seconds"], "wall_seconds": round(wall, 2), "test_acc": result["test_acc"]}


def measure(label: str, rounds: int, epochs: int, work: Path) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in CHOICES}
    for i in range(rounds):
        order = list(CHOICES) if i % 2 == 0 else list(reversed(CHOICES))
        for name in order:
            said = thread_choice_line() if name == "choice" else None
            run = {"round": i + 1, "loadavg": os.getloadavg()[0], **train_once(CHOICES[name], epochs, work / "run")}
            if said:
                run["choice_said"] = said
            runs[name].append(run)
            print(f"{label:6}  round {i + 1}  {name:9}  {run['train_seconds']:7.1f} s training  "
                  f"{run['wall_seconds']:7.1f} s in all  acc {run['test_acc']:.4f}  {said or ''}", flush=True)
    summary = {name: {"train_seconds_mean": round(statistics.mean(r["train_seconds"] for r in rs), 2),
                      "train_seconds": [r["train_seconds"] for r in rs]} for name, rs in runs.items()}
    best_other = min(summary["threads 1"]["train_seconds_mean"], summary["threads 2"]["train_seconds_mean"])
    ratio = summary["choice"]["train_seconds_mean"] / best_other
    return {"runs": runs, "summary": summary, "choice_over_best_other": round(ratio, 3),
            "within_10_percent": ratio <= 1.10}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--load-threads", type=int, default=2)
    parser.add_argument("--load-seconds", type=float, default=1800.0, help="a load process's longest life")
    parser.add_argument("--load-worker", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    parser.add_argument("--skip-quiet", action="store_true", help="only the runs under load")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_busy.json")
    args = parser.parse_args(argv)
    if args.load_worker:
        load_worker(args.load_worker, args.load_seconds)
        return 0

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench_busy_") as tmp:
        quiet = None if args.skip_quiet else measure("quiet", args.rounds, args.epochs, Path(tmp))
        workers = start_load(args.load_processes, args.load_threads, args.load_seconds)
        try:
            time.sleep(3.0)  # the load processes import torch and start
            loaded = measure("loaded", args.rounds, args.epochs, Path(tmp))
        finally:
            stop_load(workers)
    result = {"claim": "", **info, "loadavg_end": os.getloadavg(),
              "what": "convzoo train lenet --epochs N [--threads T] --json; train_seconds as the command reports it",
              "load": {"processes": args.load_processes, "threads_each": args.load_threads,
                       "work": "512x512 float32 matmul + tanh in a loop"},
              "quiet": quiet, "loaded": loaded}
    result["claim"] = claim_text(result, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["claim"])
    print(f"wrote {args.out}")
    return 0


def claim_text(result: dict, args: argparse.Namespace) -> str:
    """The result in words: the three means under load, the ratio, the same without it, the load seen."""
    quiet, loaded = result["quiet"], result["loaded"]
    ratio = loaded["choice_over_best_other"]
    means = {name: s["train_seconds_mean"] for name, s in loaded["summary"].items()}
    claim = (f"Under {args.load_processes} other processes each running a {args.load_threads}-thread PyTorch loop, "
             f"the book's LeNet ({args.epochs} epochs) trained in {means['choice']:.1f} s with convzoo's thread "
             f"choice, "
             f"{means['threads 1']:.1f} s with --threads 1 and {means['threads 2']:.1f} s with --threads 2 (means of "
             f"{args.rounds} interleaved rounds): the choice took {ratio:.2f}x the better of the two "
             f"({'within' if loaded['within_10_percent'] else 'NOT within'} 10%).")
    if quiet:
        q = {name: s["train_seconds_mean"] for name, s in quiet["summary"].items()}
        claim += (f" Without the synthetic load: {q['choice']:.1f} s, {q['threads 1']:.1f} s and "
                  f"{q['threads 2']:.1f} s ({quiet['choice_over_best_other']:.2f}x the better).")
    phases = [phase for phase in (quiet, loaded) if phase]
    loads = [run["loadavg"] for phase in phases for runs in phase["runs"].values() for run in runs]
    said = [run["choice_said"] for phase in phases for run in phase["runs"]["choice"]]
    claim += (f" The machine's own load average (other work on it, and these runs) was {min(loads):.1f} to "
              f"{max(loads):.1f} at the runs' starts; the choice said: " + " | ".join(said) + ".")
    return claim


if __name__ == "__main__":
    sys.exit(main())
