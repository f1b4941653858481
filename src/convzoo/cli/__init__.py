"""The ``convzoo`` command: one module per command group over the library; this one parses and reports errors.

    convzoo models                       the zoo: parameters, native input, MACs
    convzoo summary lenet                the chapter's layer-by-layer table
    convzoo train lenet                  the book's recipe on Fashion-MNIST
    convzoo eval runs/lenet              test accuracy, per class, confusion.png
    convzoo predict runs/lenet shoe.png  class and probability per image
    convzoo data fetch | check | show    the data set
    convzoo show | report | compare | export   pictures, report.html, runs compared, ONNX

Data-parallel training on N GPUs of one machine (docs/distributed.md for several machines):

    torchrun --standalone --nproc_per_node=N -m convzoo train resnet18 --recipe fast

A mistake the user can make ends in one line ``error: ...`` on stderr and exit status 2
(``--debug`` shows the traceback); a diverged run exits 3, an interrupted one 130 (SIGINT) or
143 (SIGTERM), saying how to resume it. docs/reliability.md lists every case.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Large CPU tensors (batches, im2col columns) on transparent huge pages: PyTorch's allocator reads
# this once, when torch starts, which is below (the command modules import it).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from ..errors import UserError, file_system_error  # noqa: E402
from ..terms import COMMAND_LINE, speaking  # noqa: E402
from . import data, evaluate, explore, export, runs, train, zoo  # noqa: E402
from .common import Parser, one_line, rank_prefix, version_line  # noqa: E402

COMMAND_GROUPS = (zoo, train, evaluate, data, runs, export, explore)


def build_parser() -> Parser:
    parser = Parser(prog="convzoo", description="Classic CNNs and their operations, trained on Fashion-MNIST.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=version_line(), help="print the versions and exit")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    _fill_help(parser)
    return parser


# What the options several commands share mean, said once (an option with its own help keeps it).
SHARED_HELP = {
    "run_dir": "a run's directory (what 'convzoo train' wrote)",
    "run_dirs": "runs' directories (what 'convzoo train' wrote)",
    "model": "a name from 'convzoo models'",
    "device": "auto (default: CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps",
    "data_dir": "the directory of the data set's files (default: the run's, else the usual places)",
    "json": "print JSON instead of text",
    "split": "train (default) or test",
    "count": "how many images",
    "name": "a published data set",
    "in_channels": "input channels (default 1)",
    "num_classes": "classes (default 10)",
}


def _fill_help(parser: argparse.ArgumentParser) -> None:
    """Give every option and argument of every command a help text (``SHARED_HELP`` where its own is missing)."""
    for action in parser._actions:  # noqa: SLF001  (argparse keeps them there)
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                _fill_help(sub)
        elif action.help is None and action.dest in SHARED_HELP:
            action.help = SHARED_HELP[action.dest]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with speaking(COMMAND_LINE):
            args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"{rank_prefix()}error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except OSError as exc:  # the file system's errors are the user's (full, read-only, permission, ...)
        user = file_system_error(exc)
        if user is None or args.debug:
            raise
        print(f"{rank_prefix()}error: {one_line(user)}", file=sys.stderr)
        return user.exit_code
    except KeyboardInterrupt as exc:  # a RunInterrupted says what the run directory keeps
        if not rank_prefix():  # every rank of a torchrun job was interrupted; rank 0 speaks for them
            print(f"error: {one_line(exc) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    return 0
