"""``convzoo data fetch | check | show``: the data set."""

from __future__ import annotations

import argparse

from .. import data
from ..data.idx import check_cache
from ..errors import DataError
from ..figures import samples_figure, save_figure
from ..show import MAX_PICTURES, check_count
from .common import parse_int, print_json


def cmd_data(args: argparse.Namespace) -> None:
    if args.data_command == "fetch":
        dest = data.fetch(args.dest, mirror=args.mirror or data.DEFAULT_MIRROR)
        print(f"Fashion-MNIST is in {dest}")
    elif args.data_command == "check":
        rows = data.check(args.data_dir)
        cached = check_cache()  # the raw copies read_idx keeps: a bad one is removed and read afresh next time
        if args.json:
            print_json(rows + [{**r, "cache": True} for r in cached])
        else:
            for r in rows:
                print(f"{'ok ' if r['ok'] else 'BAD'} {r['path']}  {r['count']:,} items")
            for r in cached:
                state = "cached copy" if r["ok"] else f"cached copy: {r['problem']}; removed, the next read " \
                    "decompresses the file again"
                print(f"{'ok ' if r['ok'] else 'BAD'} {r['path']}  ({state})")
        if not all(r["ok"] for r in rows):
            bad = ", ".join(r["file"] for r in rows if not r["ok"])
            raise DataError(f"checksum mismatch: {bad} (re-download with 'convzoo data fetch')")
    elif args.data_command == "show":
        check_count("count", args.count, MAX_PICTURES)
        images, labels = data.load_split(args.split, args.data_dir)
        save_figure(samples_figure(images[: args.count], labels[: args.count]), args.out)
        print(f"wrote {args.out}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("data", help="fetch, check or look at Fashion-MNIST")
    data_commands = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))
    d = data_commands.add_parser("fetch", help="download into the cache, verifying checksums")
    d.add_argument("--dest", help="directory (default: the user cache)")
    d.add_argument("--mirror", default=None, help="base URL of a mirror")
    d = data_commands.add_parser("check", help="verify the checksums of the files found")
    d.add_argument("--data-dir")
    d.add_argument("--json", action="store_true")
    d = data_commands.add_parser("show", help="draw a grid of samples with their class names")
    d.add_argument("--out", required=True, help="PNG file to write")
    d.add_argument("--split", choices=("train", "test"), default="train")
    d.add_argument("--count", type=parse_int, default=40)
    d.add_argument("--data-dir")
    p.set_defaults(func=cmd_data)
