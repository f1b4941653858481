"""``convzoo eval`` and ``convzoo predict``: a finished run on the test set, or on image files, folders and globs."""

from __future__ import annotations

import argparse

from .. import api
from ..data import CLASSES
from ..errors import ConfigError
from ..escape import terminal
from ..predict import check_top_k
from ..pretrained import pretrained_names
from .common import parse_int, print_json


def cmd_eval(args: argparse.Namespace) -> None:
    from ..show import show_confusion  # matplotlib: only for the commands that draw

    run = api.load(args.run_dir, args.device)
    result = run.evaluate(args.data_dir)  # a bar on a terminal, lines in a log
    out = show_confusion(args.run_dir, evaluation=result)
    per_class = dict(zip(CLASSES, (round(a, 4) for a in result.per_class_accuracy)))
    if args.json:
        print_json({"run_dir": args.run_dir, "test_acc": result.accuracy, "test_loss": round(result.loss, 6),
                    "num_examples": result.count, "per_class_accuracy": per_class, "confusion": str(out)})
        return
    print(f"test accuracy {result.accuracy:.4f} on {result.count:,} images (loss {result.loss:.4f})")
    for name, acc in per_class.items():
        print(f"  {name:<12} {acc:.4f}")
    print(f"confusion matrix: {terminal(out)}")


def cmd_predict(args: argparse.Namespace) -> None:
    check_top_k(args.top_k)  # before the run is loaded
    if args.pretrained is not None:  # the first argument is an image, then
        run, images = api.load_pretrained(args.pretrained, args.device), [args.run_dir, *args.images]
    else:
        run, images = api.load(args.run_dir, args.device), args.images
    if not images:
        raise ConfigError("predict needs at least one IMAGE", field="images")
    predictions = run.predict(images, top_k=args.top_k, invert=args.invert)
    if args.json:
        print_json([p.to_json() for p in predictions])
        return
    for prediction in predictions:
        print(prediction.format())


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("eval", help="evaluate a run on the test set (writes confusion.png)")
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("predict", help="classify image files with a trained run",
                            description="Classify images: the most probable classes of each, and a warning for an "
                                        "image that is nothing like Fashion-MNIST (a blank page, noise).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory (left out with --pretrained)")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders (their image files) or globs in quotes ('photos/*.jpg', "
                        "'scans/**/*.png')")
    p.add_argument("--top-k", type=parse_int, default=3, metavar="K",
                   help="show the K most probable classes (default 3)")
    p.add_argument("--pretrained", metavar="NAME", help="a run shipped with convzoo instead of RUN_DIR: "
                   f"{', '.join(pretrained_names())}")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="make the object light on dark like Fashion-MNIST (auto: when the border is light)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
