"""The errors a user can cause, and how one is told in a line.

The command line reports a ``UserError`` as one line ``error: ...`` with the error's
``exit_code`` (2 unless a subclass says otherwise, e.g. 3 for a diverged run); anything else is a
bug and keeps its traceback. Errors that belong to one module's concept (``CheckpointError``,
``ImageError``, ...) live in that module; the ones raised across the package live here.
"""


class UserError(ValueError):
    """Something the user gave convzoo is wrong; the message says what and how to fix it."""

    exit_code = 2


class ConfigError(UserError):
    """A training option that cannot work (bad value, missing device, existing output directory)."""


class DataError(UserError):
    """A problem with the data set files that the user can fix (missing, corrupt, wrong); a ``ValueError``."""


class RunFileError(UserError):
    """A run directory's file is missing or unreadable, or an option names something the run does not have."""


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
