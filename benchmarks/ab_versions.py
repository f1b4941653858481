"""Two versions of convzoo timed in one run, alternating, on the same training jobs.

    git worktree add ../before <commit>
    python benchmarks/ab_versions.py --before ../before --rounds 3

For each round and each job, ``bench_train.py`` of each tree (``--before`` and this checkout)
trains the job once in a fresh process with that tree's ``src`` first on ``PYTHONPATH``; the
order of the two alternates from round to round, so that a drift of the machine (another load,
thermal state) falls on both. Reported per job: each version's wall seconds (end to end: data,
every epoch, the final files), mean +- std over the rounds, and the ratio after / before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JOBS = {
    "lenet-d2l": ["--model", "lenet", "--recipe", "d2l"],
    "lenet_modern-fast": ["--model", "lenet_modern", "--recipe", "fast"],
}


def run_once(tree: Path, job: list[str], out: Path) -> dict:
    """One measured run of ``job`` by the ``bench_train.py`` of ``tree``; its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    command = [sys.executable, str(tree / "benchmarks" / "bench_train.py"), *job, "--seeds", "1", "--no-warmup",
               "--device", "cpu", "--out", str(out)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout of the earlier version")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", nargs="+", default=sorted(JOBS), choices=sorted(JOBS))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs (shorter jobs)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ab_versions.json")
    args = parser.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": ROOT}
    walls: dict[str, dict[str, list[float]]] = {job: {"before": [], "after": []} for job in args.jobs}
    jobs = {job: JOBS[job] + (["--epochs", str(args.epochs)] if args.epochs else []) for job in args.jobs}
    with tempfile.TemporaryDirectory() as tmp:
        for job in args.jobs:  # one unmeasured run each: caches, the raw data copies
            for tree in trees.values():
                run_once(tree, JOBS[job] + ["--epochs", "1"], Path(tmp) / "warm.json")
        for round_ in range(args.rounds):
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for job in args.jobs:
                for name in order:
                    result = run_once(trees[name], jobs[job], Path(tmp) / f"{job}-{name}.json")
                    wall = result["results"]["convzoo"]["wall_seconds"]["mean"]
                    walls[job][name].append(wall)
                    print(f"round {round_ + 1} {job:<18} {name:<6} {wall:6.1f} s", flush=True)
    summary = {}
    for job, by_version in walls.items():
        stats = {name: {"mean": statistics.mean(v), "std": statistics.pstdev(v), "runs": v}
                 for name, v in by_version.items()}
        ratio = stats["after"]["mean"] / stats["before"]["mean"]
        summary[job] = {**stats, "after_over_before": ratio}
        print(f"{job:<18} before {stats['before']['mean']:.1f} +- {stats['before']['std']:.1f} s   after "
              f"{stats['after']['mean']:.1f} +- {stats['after']['std']:.1f} s   after/before {ratio:.3f}")
    meta = {"before": str(trees["before"]), "command": " ".join(sys.argv), "loadavg_end": list(os.getloadavg())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta, "jobs": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
