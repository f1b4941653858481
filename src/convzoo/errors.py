"""The errors a user can cause, and how one is told in a line.

The command line reports a ``UserError`` as one line ``error: ...`` with the error's
``exit_code`` (2 unless a subclass says otherwise, e.g. 3 for a diverged run); anything else is a
bug and keeps its traceback. Errors that belong to one module's concept (``CheckpointError``,
``ImageError``, ...) live in that module; the ones raised across the package live here.
"""

import errno


class UserError(ValueError):
    """Something the user gave convzoo is wrong; the message says what and how to fix it.

    ``field`` names the setting the error is about (a ``TrainConfig`` field or an argument, such as
    ``batch_size``), when there is one; the message already names it in the words of the door the user
    came through (``convzoo.terms``).
    """

    exit_code = 2

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(UserError):
    """A setting that cannot work: a bad value, a missing device, an output directory that exists."""


class DataError(UserError):
    """A problem with the data set files that the user can fix (missing, corrupt, wrong); a ``ValueError``."""


class RunFileError(UserError):
    """A run directory's file is missing, unreadable or inconsistent with the others."""


class DivergenceError(UserError):
    """The training loss became NaN or infinite; the run directory keeps its last good checkpoint."""

    exit_code = 3


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run; the message says what the run directory keeps and how to resume."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # 128 + the signal's number, as a shell reports a process the signal killed


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (backends and libraries write pages), or its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class FileSystemError(UserError):
    """The file system refused a read or a write: full, read-only, no permission, or the wrong kind of path."""


class RunBusyError(UserError):
    """Another process holds the run directory's lock: it is training there."""


# What the user can do about each error the file system reports; an OSError with another errno is a bug.
_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: choose a path you may write to (or read)",
    errno.EPERM: "operation not permitted: choose a path you may write to (or read)",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "it is a directory where a file is expected: choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.ELOOP: "too many levels of symbolic links: choose another path",
    errno.ENOENT: "a directory on the path does not exist",
    errno.EEXIST: "it already exists: choose another path",
    errno.ENOTEMPTY: "the directory is not empty: choose another path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or close other programs",
    errno.EFBIG: "the file is too large for this file system: write elsewhere",
}


def file_system_error(exc: OSError, path: object = None) -> FileSystemError | None:
    """``exc`` as the user's error, naming the path and what to do; None if it is not one a user can cause."""
    advice = _ADVICE.get(exc.errno or 0)
    if advice is None:
        return None
    where = path if path is not None else exc.filename
    return FileSystemError(f"{where}: {advice}" if where is not None else advice)
