"""``convzoo eval`` and ``convzoo predict``: a finished run on the test set, or on image files, folders and globs."""

from __future__ import annotations

import argparse

from .. import api
from ..errors import ConfigError
from ..escape import terminal
from ..predict import check_top_k
from ..pretrained import pretrained_dir, pretrained_names
from ..rundir import read_run_config, run_classes
from .common import parse_int, print_json


def cmd_eval(args: argparse.Namespace) -> None:
    from ..show import show_confusion  # matplotlib: only for the commands that draw

    run = api.load(args.run_dir, args.device)
    result = run.evaluate(args.data_dir)  # a bar on a terminal, lines in a log
    out = show_confusion(args.run_dir, evaluation=result)
    per_class = dict(zip(run.classes, (round(a, 4) for a in result.per_class_accuracy)))
    if args.json:
        print_json({"run_dir": args.run_dir, "test_acc": result.accuracy, "test_loss": round(result.loss, 6),
                    "num_examples": result.count, "per_class_accuracy": per_class, "confusion": str(out)})
        return
    print(f"test accuracy {result.accuracy:.4f} on {result.count:,} images (loss {result.loss:.4f})")
    width = max(12, *(len(name) for name in per_class))
    for name, acc in per_class.items():
        print(f"  {terminal(name):<{width}} {acc:.4f}")
    print(f"confusion matrix: {terminal(out)}")


def cmd_predict(args: argparse.Namespace) -> None:
    pretrained = args.pretrained is not None  # then the first argument is an image
    run_dir = pretrained_dir(args.pretrained) if pretrained else args.run_dir
    images = [args.run_dir, *args.images] if pretrained else args.images
    if not images:
        raise ConfigError("predict needs at least one IMAGE", field="images")
    if args.top_k is not None:  # before the run's network is loaded
        check_top_k(args.top_k, len(run_classes(read_run_config(run_dir))))
    predictions = api.load(run_dir, args.device).predict(images, top_k=args.top_k, invert=args.invert)
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
                                        "image that is nothing like Fashion-MNIST (a blank page, noise) for a run on "
                                        "it; an image is read as the run's data was (docs/data.md).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory (left out with --pretrained)")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files, folders (their image files) or globs in quotes ('photos/*.jpg', "
                        "'scans/**/*.png')")
    p.add_argument("--top-k", type=parse_int, default=None, metavar="K",
                   help="show the K most probable classes (default 3, or all of a run of fewer)")
    p.add_argument("--pretrained", metavar="NAME", help="a run shipped with convzoo instead of RUN_DIR: "
                   f"{', '.join(pretrained_names())}")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="make the object light on dark like Fashion-MNIST (auto: when the border is light; a run on "
                        "a folder of images reads them as they are unless yes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
