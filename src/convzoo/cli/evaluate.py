"""``convzoo eval`` and ``convzoo predict``: a finished run on the test set, or on image files."""

from __future__ import annotations

import argparse

import torch

from ..data import CLASSES, to_input
from ..evaluate import scores
from ..images import load_image
from ..rundir import evaluate_run, load_run
from ..show import show_confusion
from .common import print_json


def cmd_eval(args: argparse.Namespace) -> None:
    result = evaluate_run(args.run_dir, args.device, args.data_dir)
    out = show_confusion(args.run_dir, evaluation=result)
    per_class = dict(zip(CLASSES, (round(a, 4) for a in result.per_class_accuracy)))
    if args.json:
        print_json({"run_dir": args.run_dir, "test_acc": result.accuracy, "test_loss": round(result.loss, 6),
                    "num_examples": result.count, "per_class_accuracy": per_class, "confusion": str(out)})
        return
    print(f"test accuracy {result.accuracy:.4f} on {result.count:,} images (loss {result.loss:.4f})")
    for name, acc in per_class.items():
        print(f"  {name:<12} {acc:.4f}")
    print(f"confusion matrix: {out}")


def cmd_predict(args: argparse.Namespace) -> None:
    config, model, device = load_run(args.run_dir, args.device)
    pixels = torch.stack([load_image(path, invert=args.invert) for path in args.images]).to(device)
    with torch.no_grad():  # scored as in the run's evaluation (float32 unless it trained with autocast)
        probs = torch.softmax(scores(model, to_input(pixels, config.resize), config.amp, config.tta).float(), dim=1)
    probs = probs.cpu()
    top_p, top_i = probs.max(dim=1)
    rows = [{"image": str(path), "class": CLASSES[int(i)], "label": int(i), "probability": round(float(p), 4)}
            for path, p, i in zip(args.images, top_p, top_i)]
    if args.json:
        print_json(rows)
        return
    for r in rows:
        print(f"{r['image']}: {r['class']} ({r['probability']:.1%})")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="evaluate a run on the test set (writes confusion.png)")
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("predict", help="classify image files with a trained run")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="make the object light on dark like Fashion-MNIST (auto: when the border is light)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
