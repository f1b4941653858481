"""Data-parallel training with ``torch.distributed``, started by ``torchrun``.

    torchrun --standalone --nproc_per_node=4 -m convzoo train resnet18 --recipe fast    # 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        -m convzoo train resnet18 --recipe fast                                           # on each node

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in every process it starts; without
them convzoo runs as one process. ``convzoo.train.fit`` does the rest: one process group (NCCL on
CUDA with each rank pinned to ``cuda:LOCAL_RANK``, gloo on the CPU), the model wrapped in
``DistributedDataParallel``, every rank its own shard of each global batch, metrics reduced as
sums, and only rank 0 writing files. See docs/distributed.md.

Collectives time out after ``CONVZOO_DIST_TIMEOUT`` seconds (default 60), so a rank that hangs or
dies ends the job with an error instead of leaving the others waiting forever.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .errors import ConfigError, UserError, first_line
from .terms import option

TIMEOUT_ENV = "CONVZOO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0


class DistributedError(UserError):
    """A distributed launch that cannot work: bad variables, no device for a rank, no rendezvous."""


class PeerFailure(DistributedError):
    """Another rank failed or vanished, so this one stops too; that rank's own error says why."""

    exit_code = 1


@dataclass(frozen=True)
class Rank:
    """Where this process sits in a distributed job (the variables ``torchrun`` sets)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, prints and draws the progress bar."""
        return self.rank == 0


def detect(environ: Mapping[str, str] = os.environ) -> Rank | None:
    """The ``Rank`` that ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` describe, or None outside torchrun."""
    if "RANK" not in environ and "WORLD_SIZE" not in environ:
        return None
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    try:
        rank, world_size = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        found = ", ".join(f"{n}={environ.get(n)!r}" for n in names)
        raise DistributedError(f"RANK and WORLD_SIZE must both be integers (launch with torchrun), got {found}") \
            from None
    if not (world_size >= 1 and 0 <= rank < world_size and local_rank >= 0):
        raise DistributedError(f"inconsistent RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}")
    return Rank(rank, world_size, local_rank)


def timeout() -> timedelta:
    """How long a collective may wait for the other ranks: ``$CONVZOO_DIST_TIMEOUT`` seconds, default 60."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise DistributedError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


_device: torch.device | None = None  # this rank's device, for the collectives of this module
_owned = False  # whether ``init`` created the process group (and ``destroy`` should end it)


def init(rank: Rank, device: torch.device) -> torch.device:
    """Join the process group and return this rank's device.

    ``device`` is the kind the run asked for: ``cuda`` becomes ``cuda:LOCAL_RANK`` with NCCL,
    ``cpu`` uses gloo. A process group that already exists (a caller set it up) is used as is.
    """
    global _device, _owned
    if device.type == "cuda":
        if rank.local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {rank.local_rank} has no GPU: this node has "
                                   f"{torch.cuda.device_count()} (use --nproc_per_node <= that)")
        device = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not on {device.type}")
    if not dist.is_initialized():
        limit = timeout()
        try:
            dist.init_process_group(backend, timeout=limit, device_id=device if backend == "nccl" else None)
        except (ValueError, dist.DistError) as exc:
            raise DistributedError(f"cannot join the process group ({first_line(exc)}); launch with torchrun") \
                from None
        _owned = True
    _device = device
    return device


def destroy() -> None:
    """Leave the process group ``init`` joined (a no-op otherwise)."""
    global _device, _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _device, _owned = None, False


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def agree(config: Mapping[str, object], *, local: Collection[str] = ()) -> None:
    """Raise ``ConfigError`` on every rank unless all ranks were given the same ``config`` (a no-op alone).

    Call it right after ``init``, before any work: a rank started with another ``--seed`` or
    ``--lr`` would otherwise train with its own value while rank 0's is recorded, and one with
    another ``--epochs`` or ``--batch-size`` would stop at a mismatched collective. Every rank's
    configuration is gathered (as JSON, so every rank compares the same text) and each field whose
    values differ is named as its flag with each rank's value: ``ranks disagree on --seed: rank 0
    has 0, rank 1 has 1; give every rank the same command``. ``local`` names fields that may
    differ (a per-node path).
    """
    if not active():
        return
    mine = {key: json.dumps(value, sort_keys=True, default=str) for key, value in config.items() if key not in local}
    gathered: list[dict[str, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    differences = []
    for key in dict.fromkeys(k for ranks_config in gathered for k in ranks_config):
        values = [ranks_config.get(key, "(not given)") for ranks_config in gathered]
        if len(set(values)) > 1:
            by_value: dict[str, list[int]] = {}
            for rank, value in enumerate(values):
                by_value.setdefault(value, []).append(rank)
            who = ", ".join(f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))} "
                            f"{'have' if len(ranks) > 1 else 'has'} {value}" for value, ranks in by_value.items())
            differences.append((key, f"{option(key)}: {who}"))
    if differences:
        raise ConfigError(f"ranks disagree on {'; on '.join(text for _, text in differences)}; give every rank the "
                          "same command", field=differences[0][0])


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over all ranks, in place (a no-op in a single process)."""
    if active():
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The 1-d ``tensor`` of every rank, concatenated in rank order (shards may differ in length)."""
    if not active():
        return tensor
    world = dist.get_world_size()
    length = torch.tensor([len(tensor)], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    longest = max(int(n) for n in lengths)
    padded = torch.zeros(longest, dtype=tensor.dtype, device=tensor.device)
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(n)] for part, n in zip(parts, lengths)])


def shard(n: int, rank: Rank | None) -> slice:
    """This rank's contiguous share of ``n`` items: every item on exactly one rank, sizes differ by at most 1."""
    if rank is None:
        return slice(0, n)
    return slice(rank.rank * n // rank.world_size, (rank.rank + 1) * n // rank.world_size)


@contextmanager
def together(what: str) -> Iterator[None]:
    """Run a block on every rank; if it fails on any rank, it fails on all of them.

    The rank that failed raises its own error; the others raise ``PeerFailure`` rather than
    waiting at the next collective for a rank that will never come.
    """
    if not active():
        yield
        return
    try:
        yield
    except Exception:
        _count_failures(1)
        raise
    if _count_failures(0):
        raise PeerFailure(f"another rank failed while {what} (its error is above)")


def _count_failures(failed: int) -> int:
    flag = torch.tensor([failed], dtype=torch.int32, device=_device or "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return int(flag.item())


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank died, hung or left.

    ``torch.distributed`` raises ``DistError`` for some of these, but gloo reports a closed
    connection, and NCCL a timeout, as a plain ``RuntimeError`` naming the backend.
    """
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(word in text for word in ("gloo", "nccl", "connection", "timed out"))
