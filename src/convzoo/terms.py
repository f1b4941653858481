"""The words of the front door a user came through: ``--batch-size 64`` on the command line, ``batch_size=64``
in Python.

Every message that names a setting builds the name with these functions, so one message reads right at
every door and nothing is rewritten afterwards. The command line is the default door; the Python API
enters its own with ``python_door`` (a decorator) for the time of a call, on that thread.

    option("batch_size")          --batch-size       batch_size
    setting("lr", 0.09)           --lr 0.09          lr=0.09
    setting("augment", False)     --no-augment       augment=False
    resume(run_dir)               --resume runs/x    resume=True
    continue_command(run_dir)     convzoo train --resume runs/x        train(out='runs/x', resume=True)
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

COMMAND_LINE, PYTHON = "command line", "Python"
_door: ContextVar[str | None] = ContextVar("convzoo_door", default=None)

F = TypeVar("F", bound=Callable[..., Any])


def door() -> str:
    """The door the current call came through: ``COMMAND_LINE`` or ``PYTHON``."""
    return _door.get() or COMMAND_LINE


@contextmanager
def speaking(name: str) -> Iterator[None]:
    """Messages built inside the block are worded for door ``name``."""
    token = _door.set(name)
    try:
        yield
    finally:
        _door.reset(token)


def python_door(function: F) -> F:
    """``function`` (an API call) with the messages built while it runs worded for Python, unless the call came
    through another door."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with speaking(_door.get() or PYTHON):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def in_python() -> bool:
    return door() == PYTHON


def option(name: str) -> str:
    """A setting's name: ``--batch-size`` or ``batch_size``."""
    return name if in_python() else "--" + name.replace("_", "-")


def value_text(value: object) -> str:
    """A value as the door writes it: ``0.09``, ``'fast'`` in Python and ``fast`` on the command line."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return repr(value) if in_python() else shlex.quote(value)
    return str(value)


def setting(name: str, value: object) -> str:
    """A setting and its value: ``--lr 0.09`` / ``lr=0.09``; a switch ``--no-augment`` / ``augment=False``."""
    if in_python():
        return f"{name}={value_text(value)}"
    if isinstance(value, bool):
        return option(name) if value else "--no-" + option(name)[2:]
    return f"{option(name)} {value_text(value)}"


def resume(run_dir: str | Path) -> str:
    """How to ask for the continuation of ``run_dir``: ``--resume runs/x`` / ``resume=True``."""
    return "resume=True" if in_python() else f"--resume {value_text(str(run_dir))}"


def continue_command(run_dir: str | Path, **changes: object) -> str:
    """The whole call that continues ``run_dir`` (with ``changes``): the command, or the ``train`` call."""
    if in_python():
        given = [f"out={value_text(str(run_dir))}", "resume=True", *(setting(k, v) for k, v in changes.items())]
        return f"train({', '.join(given)})"
    return " ".join(["convzoo train", resume(run_dir), *(setting(k, v) for k, v in changes.items())])


def quoted(command: str) -> str:
    """A whole command inside a sentence: quoted on the command line (``'convzoo train ...'``), as is in Python."""
    return command if in_python() else f"'{command}'"


def either(command_line: str, python: str) -> str:
    """One of two wordings, for a message whose sentence differs between the doors, not only its settings."""
    return python if in_python() else command_line
