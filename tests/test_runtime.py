"""convzoo.runtime's thread choice: one thread per core that other work leaves free, ``--threads`` over it."""

from __future__ import annotations

import pytest
import torch

from convzoo import runtime
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
