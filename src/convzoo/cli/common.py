"""What every ``convzoo`` command shares: the one-line argument errors, number parsing, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from .. import __version__

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other user error
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def print_json(obj: object) -> None:
    print(json.dumps(obj))  # ASCII: a name's control characters and undecodable bytes come out as \u escapes


def one_line(exc: BaseException) -> str:
    """The whole message of ``exc`` folded into one line, safe for a terminal (``convzoo.escape.terminal``)."""
    from ..escape import terminal

    return " ".join(terminal(line.strip()) for line in str(exc).splitlines() if line.strip())


def rank_prefix() -> str:
    """``rank N: `` in the other processes of a torchrun job (rank 0 reports as a single process does)."""
    rank = os.environ.get("RANK", "").strip()
    return f"rank {rank}: " if rank.isdigit() and int(rank) > 0 else ""


def version_line() -> str:
    """What ``convzoo --version`` prints: convzoo's version, and the PyTorch and Python it runs on."""
    return f"convzoo {__version__} (torch {torch.__version__}, Python {platform.python_version()})"
