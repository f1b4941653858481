"""Who may write into a run directory: one process at a time, from its creation (or resumption) to its end.

``RunDirectory`` is the one place that creates, locks, reuses and cleans up a run directory:

    with RunDirectory(path) as run_dir:
        run_dir.check(overwrite)     # before any work: refuse a directory that cannot be used
        run_dir.resume()             # or: hold an existing run's directory to continue it
        ...                          # load data, build the model
        run_dir.create(overwrite)    # make it (atomically), hold it, mark it as convzoo's
        ...                          # train
    # on a failure before the first epoch, a directory this call created is removed; the lock is released

Creation is decided by one ``mkdir``: of two processes starting the same new run, only one
creates the directory, the other finds it taken (or, if it takes the lock first, uses the empty
directory and the creator is refused); a process removes only what it created and holds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from ..errors import RunBusyError
from ..fileio import write_json, write_text
from ..terms import option
from .layout import (
    CHECKPOINT,
    LOCK,
    MARKER,
    MARKER_FORMAT,
    RUN_FILES,
    check_run_dir,
    is_run_dir,
    is_temporary,
    remove_temporary_files,
)


class RunLock:
    """The one-writer lock of a run directory: an OS file lock (``flock``) on the directory itself.

    The kernel releases it when the process ends, however it ends. While it is held, ``.convzoo-lock``
    holds the process id of the holder, so that a second writer can be told who holds the
    directory; the file is removed when the lock is released.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``RunBusyError`` naming the process that holds it."""
        fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = (self.run_dir / LOCK).read_text().strip()
            except OSError:
                holder = ""
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunBusyError(f"{self.run_dir} is in use by {who} (a run is training there); wait "
                               f"for it to finish, or use another {option('out')}", field="out") from None
        self._fd = fd
        try:
            write_text(self.run_dir / LOCK, f"{os.getpid()}\n")
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            (self.run_dir / LOCK).unlink(missing_ok=True)
        except OSError:  # a read-only or vanished directory: the lock itself goes with the descriptor
            pass
        os.close(self._fd)
        self._fd = None


@contextmanager
def held(run_dir: str | Path) -> Iterator[Path]:
    """Hold a run's directory while a command writes into it (a report, a picture, an export): refused while a
    run trains there, and what a killed writer left (its temporary files) is swept first."""
    lock = RunLock(Path(run_dir))
    lock.acquire()
    try:
        remove_temporary_files(lock.run_dir)
        yield lock.run_dir
    finally:
        lock.release()


@contextmanager
def writing_into(out: str | Path) -> Iterator[Path]:
    """Hold the run directory that the output file ``out`` goes into (``held``), if it goes into one; yields ``out``.

    Every command that writes a file a user names, or a picture or export into a run, writes it inside this.
    """
    out = Path(out)
    if is_run_dir(out.parent):
        with held(out.parent):
            yield out
    else:
        yield out


class RunDirectory:
    """A run directory held by this process: checked, then resumed or created, and cleaned up on failure.

    ``writer=False`` (the other ranks of a torchrun job) makes every method a no-op but ``path``.
    """

    def __init__(self, path: str | Path, *, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer
        self.created = False  # this process made the directory
        self.opened = False  # the directory is this run's (what a failure message may point to)
        self._lock = RunLock(self.path)

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is not None and self.created and self._lock.held and not (self.path / CHECKPOINT).exists():
                self._remove()
        finally:
            self._lock.release()

    def check(self, overwrite: bool) -> None:
        """Refuse, before any work, a directory that a new run could not use (``layout.check_run_dir``)."""
        if self.writer:
            check_run_dir(self.path, overwrite)

    def resume(self) -> None:
        """Hold an existing run's directory: no other process may write while this one goes on with it."""
        if self.writer:
            self._lock.acquire()
            remove_temporary_files(self.path)
        self.opened = True

    def create(self, overwrite: bool) -> None:
        """Make the directory new and empty, held by this process, with convzoo's marker.

        Whether this process created it is decided by one ``mkdir``; the checks of ``check`` are made again
        under the lock (another process may have started in between), then only convzoo's own files are
        removed (``overwrite``) and the marker is written.
        """
        if self.writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.path.mkdir()
                created = True
            except FileExistsError:
                created = False
            self._lock.acquire()  # the creator refused here removes nothing: the holder uses the directory
            self.created = created
            check_run_dir(self.path, overwrite)
            for entry in self.path.iterdir():
                if entry.name != LOCK:
                    entry.unlink()
            write_json(self.path / MARKER, {"format": MARKER_FORMAT})
        self.opened = True

    def _remove(self) -> None:
        """Remove the directory this process created and holds (a run that failed before its first epoch)."""
        for entry in self.path.iterdir():
            if entry.name in RUN_FILES or is_temporary(entry.name):
                entry.unlink(missing_ok=True)
        self._lock.release()
        self.opened = False
        try:
            self.path.rmdir()
        except OSError:  # something else appeared in it: leave it
            pass
