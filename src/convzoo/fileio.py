"""Atomic file writes: a reader sees either the old file or the complete new one, never half of it.

Every file convzoo writes (JSON results, PNG figures, safetensors checkpoints, downloads) goes
through ``atomic_path``: the writer fills a temporary file in the destination's directory, which
is renamed over the destination with ``os.replace`` only once writing has succeeded.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import FileSystemError, file_system_error


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``, on any exception it is removed.

    The temporary file lives in the same directory (``os.replace`` is atomic only within one file
    system), is hidden, and keeps ``path``'s suffix so that writers which infer the format from the
    name (``Figure.savefig``) still work. Parent directories are created. Only a regular file (or
    a new path) is replaced: a directory, FIFO or device at ``path`` is refused. An error of the
    file system (disk full, read-only, permission) becomes a ``FileSystemError`` naming ``path``.
    """
    path = Path(path)
    refuse_unless_regular(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        # Without the fsync a crash soon after the rename can leave an empty file under the final name.
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        refuse_unless_regular(path)  # the check again: something may have appeared while we wrote
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise (file_system_error(exc, path) or exc) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # e.g. a read-only file system, where it cannot have been created either
        pass


def refuse_unless_regular(path: Path) -> None:
    """Raise ``FileSystemError`` if something other than a regular file stands at ``path`` (a link is followed)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise (file_system_error(exc, path) or exc) from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise FileSystemError(f"{path} exists and is {kind}; convzoo writes only regular files: choose another path")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (keys in insertion order, trailing newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")
