"""The book's LeNet on Fashion-MNIST's IDX files and on the same images exported as a folder of PNGs (issue 24).

What it must show: the folder run reaches the IDX run's test accuracy within 0.01 (same recipe,
same seed; the folder lists its images class by class, so the batches differ). Usage:

    convzoo data export fashion-mnist /tmp/fm-png          # DIR/train/<class>/..., DIR/test/<class>/...
    python benchmarks/folder_vs_idx.py --png /tmp/fm-png --out /tmp/fm-compare [--epochs 10]

It trains both runs one after the other (``nice``, with ``convzoo train lenet``; ``--reuse`` reads
two finished run directories instead) and writes ``folder_vs_idx.json``: each run's final test
accuracy, per-epoch accuracies, training seconds and wall time, and the difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def train(out: Path, epochs: int, *extra: str) -> float:
    """Train ``convzoo train lenet`` into ``out``; the command's wall time in seconds."""
    started = time.perf_counter()
    subprocess.run(["nice", sys.executable, "-m", "convzoo", "train", "lenet", "--epochs", str(epochs), "--out",
                    str(out), *extra], check=True)
    return time.perf_counter() - started


def summary(run_dir: Path, wall: float | None) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    meta = json.loads((run_dir / "config.json").read_text())
    return {"run_dir": str(run_dir), "command": meta.get("command"), "test_acc": rows[-1]["test_acc"],
            "test_acc_per_epoch": [row["test_acc"] for row in rows],
            "train_seconds": round(sum(row["seconds"] for row in rows), 1), "wall_seconds": wall,
            "data": meta.get("data", {}).get("data", "fashion-mnist")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, required=True, help="the exported tree (DIR/train, DIR/test)")
    parser.add_argument("--out", type=Path, required=True, help="where the two runs and the JSON go")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--reuse", nargs=2, type=Path, metavar=("IDX_RUN", "FOLDER_RUN"),
                        help="summarize two finished runs instead of training")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        (idx_run, folder_run), walls = args.reuse, (None, None)
    else:
        idx_run, folder_run = args.out / "idx", args.out / "folder"
        walls = (train(idx_run, args.epochs), train(folder_run, args.epochs, "--data", str(args.png)))
    result = {"idx": summary(idx_run, walls[0]), "folder": summary(folder_run, walls[1])}
    result["difference"] = round(result["folder"]["test_acc"] - result["idx"]["test_acc"], 4)
    result["within_0.01"] = abs(result["difference"]) <= 0.01
    (args.out / "folder_vs_idx.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
