"""``convzoo data fetch | check | show | export``: the data sets."""

from __future__ import annotations

import argparse

import torch

from .. import data
from ..data.catalog import NAMED, check_named
from ..data.idx import check_cache
from ..errors import DataError
from ..escape import terminal
from ..rundir import check_output
from .common import parse_float, parse_int, print_json

_DATA_HELP = f"a named set ({', '.join(NAMED)}; default fashion-mnist), an IDX folder or a folder of images by class"


def _fetch(args: argparse.Namespace) -> None:
    name = args.name or "fashion-mnist"
    dest = data.fetch_named(name, args.dest, mirror=args.mirror)
    print(f"{'Fashion-MNIST' if name == 'fashion-mnist' else name} is in {dest}")


def _check_published(args: argparse.Namespace) -> None:
    if args.data in (None, "fashion-mnist"):
        rows = data.check(args.data_dir)
        cached = check_cache()  # the raw copies read_idx keeps: a bad one is removed and read afresh next time
    else:
        rows, cached = check_named(args.data, args.data_dir), []
    if args.json:
        print_json(rows + [{**r, "cache": True} for r in cached])
    else:
        for r in rows:
            count = f"  {r['count']:,} items" if "count" in r else ""
            print(f"{'ok ' if r['ok'] else 'BAD'} {r['path']}{count}")
        for r in cached:
            state = "cached copy" if r["ok"] else f"cached copy: {r['problem']}; removed, the next read " \
                "decompresses the file again"
            print(f"{'ok ' if r['ok'] else 'BAD'} {r['path']}  ({state})")
    if not all(r["ok"] for r in rows):
        bad = ", ".join(r["file"] for r in rows if not r["ok"])
        fetch = " ".join(["convzoo data fetch", *([args.data] if args.data else [])])
        raise DataError(f"checksum mismatch: {bad} (re-download with '{fetch}')")


def _open(args: argparse.Namespace) -> data.DataSet:
    return data.open_data(args.data, data_dir=args.data_dir, grayscale=args.grayscale, size=args.size,
                          test_fraction=args.test_fraction, seed=args.seed)


def _check(args: argparse.Namespace) -> None:
    if args.data is None or args.data in NAMED:
        _check_published(args)
        return
    found = _open(args)
    if args.json:
        print_json(found.describe() | {"notes": list(found.notes)})
    else:
        print(f"ok {found.name}: {len(found.train_labels):,} training and {len(found.test_labels):,} test images, "
              f"{found.channels} x {found.size} x {found.size}, {found.num_classes} classes "
              f"({', '.join(found.classes)})")


def cmd_data(args: argparse.Namespace) -> None:
    if args.data_command == "fetch":
        _fetch(args)
    elif args.data_command == "check":
        _check(args)
    elif args.data_command == "show":
        from ..figures import samples_figure, save_figure  # matplotlib: only for the commands that draw
        from ..show import MAX_PICTURES, check_count

        check_count("count", args.count, MAX_PICTURES)
        out = check_output(args.out)
        if args.data is None:
            images, labels = data.load_split(args.split, args.data_dir)
            classes = data.CLASSES
        else:
            found = _open(args)
            images, labels = (found.train_images, found.train_labels) if args.split == "train" else \
                (found.test_images, found.test_labels)
            classes = found.classes
            if found.channels == 3:  # the figure draws one channel: luma, as --grayscale would
                images = _luma(images[: args.count])
        if len(labels) == 0:
            raise DataError(f"the {args.split} split is empty")
        save_figure(samples_figure(images[: args.count], labels[: args.count], classes=classes), out)
        print(f"wrote {terminal(out)}")
    elif args.data_command == "export":
        found = data.open_data(args.name, data_dir=args.data_dir)
        dest = data.export_tree(found, args.dest)
        print(f"wrote {len(found.train_labels):,} training and {len(found.test_labels):,} test images to "
              f"{terminal(dest)}")


def _luma(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1).round().to(torch.uint8)


def _data_options(d: argparse.ArgumentParser) -> None:
    d.add_argument("--data", default=None, help=_DATA_HELP)
    d.add_argument("--data-dir", help="where a named set's files are (default: the cache, or the usual places)")
    d.add_argument("--grayscale", action="store_true", help="one channel, even for colour images")
    d.add_argument("--size", type=parse_int, default=None, help="resize every image to SIZE x SIZE pixels")
    d.add_argument("--test-fraction", type=parse_float, default=0.2, help="for a folder of one pool: the test share")
    d.add_argument("--seed", type=parse_int, default=0, help="for a folder of one pool: the split's seed")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("data", help="fetch, check, look at or export a data set")
    data_commands = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))
    d = data_commands.add_parser("fetch", help="download into the cache, verifying checksums")
    d.add_argument("name", nargs="?", choices=tuple(NAMED), help="the set (default fashion-mnist)")
    d.add_argument("--dest", help="directory (default: the user cache)")
    d.add_argument("--mirror", default=None, help="base URL of a mirror")
    d = data_commands.add_parser("check", help="verify a set's checksums, or read a folder and summarize it")
    _data_options(d)
    d.add_argument("--json", action="store_true")
    d = data_commands.add_parser("show", help="draw a grid of samples with their class names")
    d.add_argument("--out", required=True, help="PNG file to write")
    d.add_argument("--split", choices=("train", "test"), default="train")
    d.add_argument("--count", type=parse_int, default=40)
    _data_options(d)
    d = data_commands.add_parser("export", help="write a named set as a class-folder tree of PNGs")
    d.add_argument("name", choices=tuple(NAMED))
    d.add_argument("dest", help="a new or empty folder")
    d.add_argument("--data-dir", help="where the set's files are (default: the cache, or the usual places)")
    p.set_defaults(func=cmd_data)
