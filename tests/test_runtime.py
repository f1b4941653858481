"""convzoo.runtime's thread choice: one thread per core that other work leaves free, ``--threads`` over it."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from convzoo import runtime
from convzoo.errors import ConfigError
from convzoo.terms import PYTHON, speaking
from convzoo.train import recipe


@pytest.fixture(autouse=True)
def no_count_set_for_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a process starts: no OMP_NUM_THREADS, PyTorch's own thread count."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "_THREADS_AT_START", torch.get_num_threads())


def test_a_count_set_for_the_process_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def never() -> float:
        raise AssertionError("the load is not read when the process has a count of its own")

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert runtime.thread_choice(recipe("lenet"), cores=2, load=never)[0] == threads + 1
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    chosen, line = runtime.thread_choice(recipe("lenet"), cores=2, load=never)
    assert chosen == threads and "OMP_NUM_THREADS" in line


@pytest.mark.parametrize(("cores", "busy", "threads", "says"), [
    (2, 0.0, 2, "threads: 2, one per core (the machine is quiet)"),
    (2, 0.4, 2, "threads: 2, one per core (the machine is quiet)"),  # a flicker of load is no load
    (2, 1.0, 1, "threads: 1 of 2 cores (the machine is busy: 1.0 threads of other processes running)"),
    (2, 3.9, 1, "threads: 1 of 2 cores (the machine is busy: 3.9 threads"),  # never fewer than one
    (8, 2.6, 5, "threads: 5 of 8 cores (the machine is busy: 2.6 threads"),
    (4, None, 4, "threads: 4, one per core (the load of this machine is unknown)"),
])
def test_threads_are_the_cores_other_work_leaves_free(cores: int, busy: float | None, threads: int, says: str) -> None:
    chosen, line = runtime.thread_choice(recipe("lenet"), cores=cores, load=lambda: busy)
    assert chosen == threads
    assert line.startswith(says)
    assert line.endswith("; --threads N overrides")


def test_the_threads_option_overrides_the_load() -> None:
    def never() -> float:
        raise AssertionError("the load is not read when --threads is given")

    assert runtime.thread_choice(recipe("lenet", threads=3), cores=2, load=never) == (3, "threads: 3 (--threads)")


def test_the_load_counts_other_processes_threads_not_this_ones() -> None:
    readings = iter([(5, 1), (3, 2), (1, 2), (4, 1)])  # (running on the machine, running in this process)
    assert runtime.other_load(lambda: next(readings), samples=4, interval=0) == pytest.approx((4 + 1 + 0 + 3) / 4)
    assert runtime.other_load(lambda: None, samples=3, interval=0) is None


def test_the_load_is_read_from_proc_where_there_is_one() -> None:
    reading = runtime._running_threads()
    if reading is None:
        pytest.skip("no /proc/stat here")
    machine, own = reading
    assert own >= 1  # this thread, reading it
    assert machine >= own


def test_compute_settings_use_the_choice_and_restore_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "other_load", lambda: 5.0)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    with runtime.compute_settings(recipe("lenet")):
        assert torch.get_num_threads() == 1
    with runtime.compute_settings(recipe("lenet"), threads=2):  # a choice made (and printed) before
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


# --- where the load is read, and the rest of the run's surroundings ----------------------------------

class _Proc:
    """``open`` and ``os.listdir`` over a few files of a made-up ``/proc``."""

    def __init__(self, files: dict[str, bytes | None], tasks: list[str]) -> None:
        self.files, self.tasks = files, tasks

    def open(self, path: str, mode: str = "r") -> io.BytesIO:
        assert mode == "rb"
        data = self.files.get(path)
        if data is None:
            raise FileNotFoundError(path)
        return io.BytesIO(data)

    def listdir(self, path: str) -> list[str]:
        assert path == "/proc/self/task"
        return self.tasks


def _with_proc(monkeypatch: pytest.MonkeyPatch, stat: bytes | None, tasks: dict[str, bytes | None]) -> None:
    proc = _Proc({"/proc/stat": stat, **{f"/proc/self/task/{t}/stat": data for t, data in tasks.items()}}, list(tasks))
    monkeypatch.setattr(runtime, "open", proc.open, raising=False)
    monkeypatch.setattr(runtime, "os", SimpleNamespace(listdir=proc.listdir))


STAT = b"cpu  10 20 30\nprocs_running_total 99\nprocs_running 7\nprocs_blocked 1\n"


def test_the_running_threads_are_read_from_proc_stat_and_this_process_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    # a thread's name may hold spaces and parentheses: its state is the first field after the last ")"
    tasks = {"101": b"101 (python) R 1 2", "102": b"102 (a) b) S 1 R", "103": None, "104": b"104 (x R) R 0",
             "105": b"105 (y) D 0", "106": b"106 (a) R b) S 0"}
    _with_proc(monkeypatch, STAT, tasks)
    assert runtime._running_threads() == (7, 2)  # 103 ended while it was read


@pytest.mark.parametrize(("stat", "tasks"), [
    (None, {"1": b"1 (p) R"}),  # no /proc/stat
    (b"cpu 1 2\nprocs_blocked 1\n", {"1": b"1 (p) R"}),  # no procs_running line
    (b"procs_running many\n", {"1": b"1 (p) R"}),  # not a number
    (b"procs_running\n", {"1": b"1 (p) R"}),  # no number at all
    (STAT, {"1": b"1 (p)"}),  # a task's line cut short
])
def test_proc_that_does_not_say_gives_no_reading(stat: bytes | None, tasks: dict[str, bytes],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _with_proc(monkeypatch, stat, tasks)
    assert runtime._running_threads() is None


def test_the_load_is_ten_readings_a_hundredth_of_a_second_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(runtime.time, "sleep", slept.append)
    readings = iter(range(10, 30))
    assert runtime.other_load(lambda: (next(readings), 1)) == pytest.approx(sum(range(9, 19)) / 10)
    assert slept == [0.01] * 9
    assert runtime.other_load(lambda: (0, 3)) == 0  # never below none


def test_in_python_the_override_is_the_threads_argument() -> None:
    with speaking(PYTHON):
        assert runtime.override() == "threads=N overrides"
        assert runtime.thread_choice(recipe("lenet"), cores=2, load=lambda: 0.0)[1] == \
            "threads: 2, one per core (the machine is quiet); threads=N overrides"
        assert runtime.thread_choice(recipe("lenet", threads=3))[1] == "threads: 3 (threads)"
    assert runtime.override() == "--threads N overrides"


def test_the_usable_cores_are_this_process_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 2, 5} if pid == 0 else set())
    assert runtime.usable_cores() == 3
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set())
    assert runtime.usable_cores() == 1

    def unknown(pid: int) -> set[int]:
        raise OSError("no affinity here")

    monkeypatch.setattr(runtime.os, "sched_getaffinity", unknown)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 6)
    assert runtime.usable_cores() == 6
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: None)
    assert runtime.usable_cores() == 1
    monkeypatch.delattr(runtime.os, "sched_getaffinity")  # not Linux
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 4)
    assert runtime.usable_cores() == 4


def _machine(monkeypatch: pytest.MonkeyPatch, *, cuda: int = 0, mps: bool = False) -> None:
    """A machine with ``cuda`` CUDA devices and MPS or not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_auto_picks_cuda_then_mps_then_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=1, mps=True)
    assert runtime.resolve_device("auto") == torch.device("cuda")
    _machine(monkeypatch, mps=True)
    assert runtime._mps_available() is True
    assert runtime.resolve_device("auto") == torch.device("mps") == runtime.resolve_device("mps")
    _machine(monkeypatch)
    assert runtime._mps_available() is False
    assert runtime.resolve_device("auto") == torch.device("cpu") == runtime.resolve_device("cpu")
    monkeypatch.setattr(runtime, "torch", SimpleNamespace(backends=SimpleNamespace()))  # a torch without MPS at all
    assert runtime._mps_available() is False


@pytest.mark.parametrize(("name", "cuda", "message"), [
    ("gpu", 0, "--device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("meta", 0, "--device must be auto, cpu, cuda, cuda:N or mps, got 'meta'"),
    ("cuda", 0, "--device cuda: CUDA is not available on this machine (use --device cpu or auto)"),
    ("cuda:1", 0, "--device cuda:1: CUDA is not available on this machine (use --device cpu or auto)"),
    ("cuda:2", 2, "--device cuda:2: this machine has 2 CUDA device(s)"),
    ("mps", 2, "--device mps: MPS is not available on this machine (use --device cpu or auto)"),
])
def test_a_device_that_is_not_there_is_refused(name: str, cuda: int, message: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=cuda)
    with pytest.raises(ConfigError) as caught:
        runtime.resolve_device(name)
    assert str(caught.value) == message and caught.value.field == "device"


def test_a_device_that_is_there_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, cuda=2)
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert runtime.resolve_device("cuda:0") == torch.device("cuda", 0)
    assert runtime.resolve_device("cuda") == torch.device("cuda")
    with speaking(PYTHON), pytest.raises(ConfigError, match=r"^device='cuda:5': this machine has 2 CUDA device"):
        runtime.resolve_device("cuda:5")


def test_device_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU: 8 cores \nflags\t: a\n"
                       "model name\t: Another\n")
    monkeypatch.setattr(runtime, "Path", lambda path: cpuinfo if path == "/proc/cpuinfo" else Path(path))
    threads = torch.get_num_threads()
    assert runtime.device_name(torch.device("cpu")) == f"Some CPU: 8 cores ({threads} threads)"
    cpuinfo.write_text("processor\t: 0\n")
    monkeypatch.setattr(runtime.platform, "processor", lambda: "")
    monkeypatch.setattr(runtime.platform, "machine", lambda: "riscv")
    assert runtime.device_name(torch.device("cpu")) == f"riscv ({threads} threads)"
    cpuinfo.unlink()  # not Linux
    monkeypatch.setattr(runtime.platform, "processor", lambda: "arm")
    assert runtime.device_name(torch.device("cpu")) == f"arm ({threads} threads)"
    assert runtime.device_name(torch.device("mps")) == "mps"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"GPU of {device}")
    assert runtime.device_name(torch.device("cuda", 1)) == "GPU of cuda:1"


def test_the_versions_a_run_records() -> None:
    import platform

    import numpy

    import convzoo

    assert runtime.versions() == {"convzoo": convzoo.__version__, "torch": torch.__version__,
                                  "numpy": numpy.__version__, "python": platform.python_version(),
                                  "platform": platform.platform()}


@pytest.mark.parametrize(("device", "settings", "distributed", "graphs"), [
    ("cpu", {"cuda_graphs": True}, False, False),
    ("cuda", {}, False, True),
    ("cuda", {}, True, False),
    ("cuda", {"compile": True}, False, False),
    ("cuda", {"cuda_graphs": False}, False, False),
    ("cuda", {"cuda_graphs": True, "compile": True}, True, True),
])
def test_when_steps_replay_from_a_cuda_graph(device: str, settings: dict, distributed: bool, graphs: bool) -> None:
    assert runtime.uses_cuda_graphs(recipe("lenet", **settings), torch.device(device),
                                    distributed=distributed) is graphs


def test_compute_settings_on_cuda_and_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device(name.split(":")[0]))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(),
              torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    assert before == (False, "highest", False, False)
    for autotune in (True, False):
        with runtime.compute_settings(recipe("lenet", device="cuda", autotune=autotune), threads=1):
            assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == (autotune, "high")
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before[:2]
    with runtime.compute_settings(recipe("lenet", device="cpu"), threads=1):
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before[:2]
    with runtime.compute_settings(recipe("lenet", device="cuda", deterministic=True), threads=1):
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before[:2]
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(),
            torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) == before
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
