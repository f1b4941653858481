"""Where a run executes: the device, the backend switches (threads, determinism, cuDNN, TF32), versions."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import TrainConfig
from .errors import ConfigError
from .terms import in_python, option, setting


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    wrong = ConfigError(f"{option('device')} must be auto, cpu, cuda, cuda:N or mps, got {name!r}", field="device")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise wrong from None
    given, instead = setting("device", name), setting("device", "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{given}: CUDA is not available on this machine (use {instead} or auto)", field="device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{given}: this machine has {torch.cuda.device_count()} CUDA device(s)", field="device")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"{given}: MPS is not available on this machine (use {instead} or auto)", field="device")
    if device.type not in ("cpu", "cuda", "mps"):
        raise wrong
    return device


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type


def versions() -> dict[str, str]:
    """The versions a run records: convzoo, torch, numpy, Python and the platform."""
    return {"convzoo": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def uses_cuda_graphs(config: TrainConfig, device: torch.device, *, distributed: bool = False) -> bool:
    """Whether training replays its steps from a CUDA graph (``convzoo.step``).

    ``config.cuda_graphs`` decides when set; by default (None) graphs are used on CUDA in a single
    process without ``--compile``. They cut a launch-bound network's step several times over
    (LeNet: 109k -> 610k examples/s on an H200) and change nothing measurable for the large ones;
    the price is the graph's own copy of a step's activations in GPU memory (``--no-cuda-graphs``
    frees it).
    """
    if device.type != "cuda":
        return False
    if config.cuda_graphs is not None:
        return config.cuda_graphs
    return not config.compile and not distributed


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _running_threads() -> tuple[int, int] | None:
    """Threads running or ready to run now: on the whole machine (``procs_running`` of ``/proc/stat``) and in
    this process (state ``R`` in ``/proc/self/task``); None where ``/proc`` does not say (not Linux)."""
    try:
        with open("/proc/stat", "rb") as stat:
            machine = next(int(line.split()[1]) for line in stat if line.startswith(b"procs_running "))
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat", "rb") as f:
                    own += f.read().rpartition(b")")[2].split()[0] == b"R"
            except OSError:  # the thread ended meanwhile
                pass
        return machine, own
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def other_load(sample: Callable[[], tuple[int, int] | None] = _running_threads, *, samples: int = 10,
               interval: float = 0.01) -> float | None:
    """How many threads of other processes run or wait for a core, on average over ``samples`` readings
    ``interval`` seconds apart (0.1 s in all); None where the system does not say.

    The instantaneous count, not the load average: the 1-minute average trails a load that just
    started or stopped by a minute, and counts processes that sleep on disk (state D) as load.
    """
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        reading = sample()
        if reading is None:
            return None
        counts.append(max(reading[0] - reading[1], 0))
    return sum(counts) / len(counts)


_THREADS_AT_START = torch.get_num_threads()  # PyTorch's own choice, before anyone set another


def thread_choice(config: TrainConfig, *, cores: int | None = None,
                  load: Callable[[], float | None] | None = None) -> tuple[int, str]:
    """The CPU threads a run uses and the line that says why.

    ``config.threads`` when set; a count set for this process (``OMP_NUM_THREADS``, ``torch.set_num_threads``);
    otherwise one thread per core that other work leaves free, at least
    one (``cores``: ``usable_cores()``; ``load``: ``other_load``, read over 0.1 s). PyTorch's default, a
    thread per core, is the fastest on a quiet machine and the slowest on a busy one: its threads
    wait for each other at every operation, and one that lost its core holds up the rest
    (``benchmarks/bench_busy.py`` measures it).
    """
    if config.threads:
        return config.threads, f"threads: {config.threads} ({option('threads')})"
    if os.environ.get("OMP_NUM_THREADS", "").strip() or torch.get_num_threads() != _THREADS_AT_START:
        threads = torch.get_num_threads()  # a count set for this process is kept: OMP_NUM_THREADS, set_num_threads
        return threads, f"threads: {threads}, as set for this process (OMP_NUM_THREADS or torch.set_num_threads)"
    cores = usable_cores() if cores is None else cores
    busy = (load or other_load)()
    if busy is None:
        return cores, f"threads: {cores}, one per core (the load of this machine is unknown); {override()}"
    threads = max(1, min(cores, cores - round(busy)))
    if threads == cores:
        return threads, f"threads: {threads}, one per core (the machine is quiet); {override()}"
    return threads, (f"threads: {threads} of {cores} cores (the machine is busy: {busy:.1f} threads of "
                     f"other processes running); {override()}")


def override() -> str:
    """How a user sets the thread count: ``--threads N overrides`` (``threads=N`` in Python)."""
    return f"{option('threads')}{'=' if in_python() else ' '}N overrides"


@contextlib.contextmanager
def compute_settings(config: TrainConfig, threads: int | None = None) -> Iterator[None]:
    """Fix the CPU thread count (``threads``, else ``thread_choice(config)``: ``config.threads`` or the cores the
    machine's load leaves free) and, with ``config.deterministic``, use deterministic
    kernels (cuDNN autotuning off); otherwise, on CUDA, allow TF32 matmuls and, with ``config.autotune``,
    autotune cuDNN. Everything is restored afterwards.

    Autotuning times the candidate algorithms of every convolution shape (forward, both backward
    passes; the last partial batch and the evaluation batch are shapes of their own) the first time
    it runs: it pays in long runs of a few layer shapes and can cost seconds in a short run of a
    network with many (GoogLeNet has 57 convolutions).

    On the CPU a deterministic run with the same thread count is bitwise reproducible, so a resumed
    run ends with the weights of an uninterrupted one. CUDA ops without a deterministic kernel
    warn instead of failing (``warn_only``).
    """
    previous, saved = torch.get_num_threads(), None
    torch.set_num_threads(threads or thread_choice(config)[0])
    fast = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    if not config.deterministic and resolve_device(config.device).type == "cuda":
        # cuDNN autotunes each layer's algorithm on its first batch; float32 matmuls may use TF32.
        torch.backends.cudnn.benchmark = config.autotune
        torch.set_float32_matmul_precision("high")
    if config.deterministic:  # only then: switching determinism imports torch._inductor (a second)
        saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                 torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        torch.backends.cudnn.benchmark = fast[0]
        torch.set_float32_matmul_precision(fast[1])
        if saved is not None:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
