"""``convzoo show | report | compare``: looking inside finished runs.

    convzoo show kernels runs/lenet [--layer 3]        kernels.png in the run directory
    convzoo show features runs/lenet shoe.png          features.png
    convzoo show mistakes runs/lenet --count 32        mistakes.png
    convzoo show confusion runs/lenet                  confusion.png
    convzoo show curves runs/a runs/b --out ab.png     train loss and test accuracy overlaid
    convzoo show ops --out ops.png                     corr2d, padding and stride worked out
    convzoo report runs/lenet                          report.html (every run writes one)
    convzoo compare runs/a runs/b [--json]             a table on stdout, and compare.html

The work is done by ``convzoo.show`` and ``convzoo.report``.
"""

from __future__ import annotations

import argparse

from .. import api
from ..escape import terminal
from ..rundir import held
from .common import parse_int, print_json


def cmd_show(args: argparse.Namespace) -> None:
    from .. import show  # matplotlib: only for the commands that draw

    what = args.show_command
    if what == "kernels":
        path = show.show_kernels(args.run_dir, args.out, layer=args.layer)
    elif what == "features":
        path = show.show_features(args.run_dir, args.image, args.out, invert=args.invert, channels=args.channels)
    elif what == "mistakes":
        path = show.show_mistakes(args.run_dir, args.out, count=args.count, device=args.device, data_dir=args.data_dir)
    elif what == "confusion":
        path = show.show_confusion(args.run_dir, args.out, device=args.device, data_dir=args.data_dir)
    elif what == "curves":
        path = show.show_curves(args.run_dirs, args.out)
    else:
        path = show.show_ops(args.out)
    print(f"wrote {terminal(path)}")


def cmd_report(args: argparse.Namespace) -> None:
    from ..report import write_report

    run = api.load(args.run_dir, args.device).evaluated(args.data_dir)
    with held(args.run_dir):
        print(f"wrote {terminal(write_report(run))}")


def cmd_compare(args: argparse.Namespace) -> None:
    from ..compare import compare_runs, format_table, write_comparison

    if args.json and args.out is None:  # the table as JSON on stdout; a page only when asked for
        print_json({"out": None, "runs": compare_runs(args.run_dirs)})
        return
    path, rows = write_comparison(args.run_dirs, args.out or "compare.html")
    if args.json:
        print_json({"out": str(path), "runs": rows})
        return
    print(format_table(rows))
    print(f"wrote {terminal(path)}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    def run_options(p: argparse.ArgumentParser, *, evaluates: bool) -> None:
        if evaluates:
            p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
        p.add_argument("--data-dir", help="where the run's data files are now (default: where they were)")

    p = commands.add_parser("show", help="draw what a run learned, or the operations (PNG)")
    pictures = p.add_subparsers(dest="show_command", required=True, parser_class=type(p))
    s = pictures.add_parser("kernels", help="learned kernels of a conv layer (kernels.png)")
    s.add_argument("run_dir")
    s.add_argument("--layer", help="conv layer name, e.g. 3 or 2.0.p2_2 (default: the first conv layer)")
    s.add_argument("--out", help="PNG file (default: RUN_DIR/kernels.png)")
    s = pictures.add_parser("features", help="feature maps after each conv layer for one image (features.png)")
    s.add_argument("run_dir")
    s.add_argument("image", help="an image file (PNG, JPEG, ...)")
    s.add_argument("--channels", type=parse_int, default=8, help="feature maps per layer (default 8)")
    s.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="make the object light on dark like Fashion-MNIST (auto: when the border is light)")
    s.add_argument("--out", help="PNG file (default: RUN_DIR/features.png)")
    s = pictures.add_parser("mistakes", help="misclassified test images, true and predicted class (mistakes.png)")
    s.add_argument("run_dir")
    s.add_argument("--count", type=parse_int, default=24, help="how many (default 24)")
    s.add_argument("--out", help="PNG file (default: RUN_DIR/mistakes.png)")
    run_options(s, evaluates=True)
    s = pictures.add_parser("confusion", help="confusion matrix on the test set (confusion.png)")
    s.add_argument("run_dir")
    s.add_argument("--out", help="PNG file (default: RUN_DIR/confusion.png)")
    run_options(s, evaluates=True)
    s = pictures.add_parser("curves", help="train loss and test accuracy of several runs overlaid")
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--out", default="curves-compared.png", help="PNG file (default: curves-compared.png)")
    s = pictures.add_parser("ops", help="the worked examples: corr2d, padding and stride")
    s.add_argument("--out", default="ops.png", help="PNG file (default: ops.png)")
    p.set_defaults(func=cmd_show)

    p = commands.add_parser("report", help="write RUN_DIR/report.html, one self-contained page about a run")
    p.add_argument("run_dir")
    run_options(p, evaluates=True)
    p.set_defaults(func=cmd_report)

    p = commands.add_parser("compare", help="compare runs: a table, and one HTML page")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="HTML file (default: compare.html; with --json, none unless given)")
    p.add_argument("--json", action="store_true", help='print {"out", "runs": [...]} instead of the table')
    p.set_defaults(func=cmd_compare)
