"""Each epoch's checkpoint and ``metrics.jsonl``, written on a background thread while the next epoch trains."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from ..checkpoint import write_state
from ..fileio import write_text
from .layout import CHECKPOINT, METRICS
from .metrics import metrics_text


class EpochWriter:
    """Writes an epoch's checkpoint, then metrics.jsonl, on one background thread while the next epoch trains.

    One write at a time: ``submit`` first waits for the previous one. Each file is written
    atomically and the checkpoint first, so after any crash metrics.jsonl is at most one epoch
    behind the checkpoint (what ``fit(resume=True)`` repairs). A failed write is raised by the
    next ``submit`` or ``wait``; ``close`` only waits (the run is already failing).
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convzoo-checkpoint")
        self._pending: Future | None = None

    def __enter__(self) -> EpochWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, run_dir: Path, snapshot: tuple, history: list[dict]) -> None:
        self.wait()
        text = metrics_text(history)
        self._pending = self._pool.submit(_write_epoch, run_dir, snapshot, text)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        while pending is not None:
            try:  # in slices: SIGINT/SIGTERM stay deliverable to the training thread
                pending.result(timeout=0.1)
                return
            except FutureTimeout:
                continue

    def close(self) -> None:
        try:
            self.wait()
        except Exception:  # noqa: BLE001  (the run is already failing; its own error is the one to report)
            pass
        self._pool.shutdown(wait=True)


def _write_epoch(run_dir: Path, snapshot: tuple, metrics: str) -> None:
    write_state(run_dir / CHECKPOINT, snapshot)
    write_text(run_dir / METRICS, metrics)
