"""How much memory this process may still use, and the refusal of a read that would not fit.

Every size the data layer allocates from a file's say-so (an IDX header, a folder of images) is
checked here before the bytes exist: against the kernel's ``MemAvailable`` and, when one is set,
the process's address-space limit (``ulimit -v``), whichever is smaller.
"""

from __future__ import annotations

import os
import resource

from ..errors import DataError

GIB = 1024 ** 3


def available_memory() -> int | None:
    """Bytes this process may still allocate (MemAvailable, capped by RLIMIT_AS); None if unknown."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            used = 0
        free = soft - used if free is None else min(free, soft - used)
    return free


def size_text(n: int) -> str:
    """``n`` bytes for a person: ``1.5 GiB``, ``42.0 MiB``."""
    for unit, scale in (("GiB", GIB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def require_memory(need: int, what: str, advice: str = "") -> None:
    """Raise ``DataError`` when ``need`` bytes (for ``what``) exceed the memory available."""
    free = available_memory()
    if free is not None and need > free:
        tail = f"; {advice}" if advice else ""
        raise DataError(f"{what} needs {size_text(need)} of memory but only {size_text(max(free, 0))} is available"
                        f"{tail}")
