"""Data-parallel training: torchrun with two gloo processes on the CPU against one process.

LeNet (no batch norm, no dropout) with the same seed and global batch must end with the same
weights, up to the order of floating-point sums, and the same test accuracy. The slice's 2,000
training images make 62 batches of 32 and one of 16, so every rank's share of every batch has the
same size, which is when averaging the ranks' mean gradients equals the mean over the batch. The
999 test images split 499 + 500, exercising uneven evaluation shards.

How close is "the same, up to the order of sums"? The tolerance is measured, not guessed: the
one-process training is replayed by hand in float64 from the same initial weights and batches, and
its distance from the float32 run is what float32 rounding does to this training. Two processes sum
in another order, so their float32 result lies within about as far of the float64 one: the weights
of the two runs may differ by at most ``ROUNDING_MARGIN`` times that distance, tensor by tensor. A
sharding bug is another training, not a rounding: the same replay with every step on half of its
batch (what two ranks given the same shard compute) lands hundreds of times further away, which
``test_the_tolerance_separates_rounding_from_a_sharding_bug`` checks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (the first fit imports it, ~10 s: paid once, at collection)
from torch import nn

import convzoo
from convzoo import distributed, rundir
from convzoo.checkpoint import load_model, saved_epoch
from convzoo.config import TrainConfig, recipe
from convzoo.data import Batches, load_split
from convzoo.distributed import DistributedError, Rank
from convzoo.models import create_model, init_weights
from convzoo.optim import lr_factor, make_optimizer
from convzoo.run import Run
from convzoo.train import fit

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
EPOCHS = 3
ROUNDING_MARGIN = 4  # two float32 orders, each about as far from float64; twice that again for safety
ARGS = ["--optimizer", "adamw", "--lr", "0.005", "--batch-size", "32", "--limit-test", "999",
        "--data-dir", str(SLICE), "--device", "cpu"]
# PYTHONPATH: the commands run the convzoo this process imports (a worktree's src/), not whichever the
# environment happens to have installed.
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8",
       "PYTHONPATH": str(Path(convzoo.__file__).resolve().parents[1])}


CONFIG = recipe("lenet", optimizer="adamw", lr=0.005, batch_size=32, limit_test=999, data_dir=str(SLICE),
                device="cpu", epochs=EPOCHS, threads=1)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run in one process."""
    out = tmp_path_factory.mktemp("single") / "run"
    fit(CONFIG, out, log=lambda _: None, progress=False)
    return out


def replay(config: TrainConfig, dtype: torch.dtype, *, half_batches: bool = False) -> dict[str, torch.Tensor]:
    """``fit``'s one-process training written out step by step, in ``dtype``: the same initial weights, batch
    order, optimizer and schedule; the final weights. ``half_batches`` trains each step on the first half of its
    batch only, which is what two ranks that were both given rank 0's shard would do."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        model = create_model(config.model, input_size=config.input_size)
        init_weights(model, config.init)
        model.to(dtype).train()
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        images, labels = load_split("train", config.data_dir)
        batches = Batches(images, labels, config.batch_size, shuffle=True, seed=config.seed, resize=config.input_size,
                          channels_last=config.channels_last)
        optimizer = make_optimizer(model, config)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        steps = len(batches)
        for epoch in range(config.epochs):
            batches.set_epoch(epoch)
            for i, (x, y) in enumerate(batches):
                optimizer.param_groups[0]["lr"] = config.lr * lr_factor(config.schedule, epoch * steps + i,
                                                                        steps * config.epochs)
                if half_batches:
                    x, y = x[: len(y) // 2], y[: len(y) // 2]
                loss = loss_fn(model(x.to(dtype)), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return {k: v.float() for k, v in model.state_dict().items()}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rounding(single: Path) -> dict[str, float]:
    """Per weight tensor, the largest distance float32 rounding puts between the one-process run and the float64
    replay of it. (Replayed in float32, the replay is the run, bit for bit; were it another training, these
    distances would not be rounding's, and the sharding-bug test below would fail.)"""
    run = load_model(single / "model.safetensors").state_dict()
    exact = replay(CONFIG, torch.float64)
    return {k: float((run[k] - exact[k]).abs().max()) for k in run}


@pytest.mark.slow  # seconds: torchrun, gloo ranks or whole trainings
def test_the_tolerance_separates_rounding_from_a_sharding_bug(single: Path, rounding: dict[str, float]) -> None:
    run = load_model(single / "model.safetensors").state_dict()
    wrong = replay(CONFIG, torch.float32, half_batches=True)
    # Measured with torch 2.13: rounding moves a weight by 5e-8 to 4e-6; the bug by 1e5 times that.
    for key, scale in rounding.items():
        assert 0 < scale < 1e-4, key  # float32 rounding, a few hundred steps of it
        assert float((wrong[key] - run[key]).abs().max()) > 100 * ROUNDING_MARGIN * scale, key


def torchrun(*args: str, home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "convzoo",
         "train", *args], env={**ENV, "HOME": str(home)}, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_same_training(distributed_run: Path, single_run: Path, rounding: dict[str, float]) -> None:
    a = load_model(single_run / "model.safetensors").state_dict()
    b = load_model(distributed_run / "model.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=ROUNDING_MARGIN * rounding[key], msg=key)
    result = json.loads((distributed_run / "result.json").read_text())
    assert result["test_acc"] == json.loads((single_run / "result.json").read_text())["test_acc"] > 0.5
    rows = [json.loads(line) for line in (distributed_run / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (single_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    for r, s in zip(rows, reference):
        assert r["train_loss"] == pytest.approx(s["train_loss"], rel=1e-4)
        assert r["train_acc"] == pytest.approx(s["train_acc"], abs=2 / 2000)  # a prediction may flip
    assert not [p for p in distributed_run.iterdir() if rundir.is_temporary(p.name)]


@pytest.mark.slow  # seconds: torchrun, gloo ranks or whole trainings
def test_two_ranks_end_where_one_process_does(single: Path, rounding: dict[str, float], tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = torchrun("lenet", *ARGS, "--epochs", str(EPOCHS), "--out", str(out), home=tmp_path)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert_same_training(out, single, rounding)
    # Only rank 0 prints: one line per epoch and the summary.
    assert len([line for line in stdout.splitlines() if line.startswith("epoch")]) == EPOCHS
    assert stdout.count("test accuracy") == 1 and "Traceback" not in stderr
    # The sharded evaluation agrees with evaluating the saved model in one process.
    recorded = json.loads((out / "result.json").read_text())["test_acc"]
    assert Run.open(out, "cpu").evaluate(progress=False).accuracy == recorded
    assert json.loads((out / "config.json").read_text())["config"]["batch_size"] == 32  # the global batch


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def rank_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v[5:].decode() for v in environ if v.startswith(b"RANK=")), None)


@pytest.mark.slow  # seconds: torchrun, gloo ranks or whole trainings
def test_a_killed_rank_ends_the_job_and_resume_finishes_it(single: Path, rounding: dict[str, float],
                                                          tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = torchrun("lenet", *ARGS, "--epochs", str(EPOCHS), "--out", str(out), home=tmp_path)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.safetensors").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    victim = next(pid for pid in children(proc.pid) if rank_of(pid) == "1")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode != 0 and time.monotonic() - killed < 60
    # Rank 0 says in one line why it stopped: it lost its peer, or torchrun stopped it.
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and ("lost contact with the other ranks" in errors[0] or "SIGTERM" in errors[0])
    assert not (out / "model.safetensors").exists() and not [p for p in out.iterdir() if rundir.is_temporary(p.name)]
    assert saved_epoch(out / "checkpoint.safetensors") >= 1

    proc = torchrun("--resume", str(out), home=tmp_path)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert f"resuming {out} after epoch" in stdout
    assert_same_training(out, single, rounding)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # seconds: torchrun, gloo ranks or whole trainings
def test_a_rank_that_fails_to_start_stops_the_others(tmp_path: Path) -> None:
    env = {**ENV, "HOME": str(tmp_path), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, "-m", "convzoo", "train", "lenet", *ARGS, "--data-dir", data,
                               "--out", str(tmp_path / "run")], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for r, data in enumerate([str(SLICE), str(tmp_path / "nowhere")])]
    started = time.monotonic()
    (_, err0), (_, err1) = (p.communicate(timeout=60) for p in procs)
    assert time.monotonic() - started < 30
    assert procs[1].returncode == 2 and err1.startswith("rank 1: error: data directory") and err1.count("\n") == 1
    assert procs[0].returncode == 1
    assert err0 == "error: another rank failed while setting up the run (its error is above)\n"
    assert not (tmp_path / "run").exists()


# --- the helpers ---------------------------------------------------------------------------------

def test_detect_reads_what_torchrun_sets() -> None:
    assert distributed.detect({}) is None
    assert distributed.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Rank(3, 4, 1)
    assert distributed.detect({"RANK": "0", "WORLD_SIZE": "1"}) == Rank(0, 1, 0)  # LOCAL_RANK defaults to RANK
    assert distributed.detect({"RANK": "2", "WORLD_SIZE": "3"}) == Rank(2, 3, 2)
    assert distributed.detect({"RANK": "0", "WORLD_SIZE": "1"}).is_main
    assert not Rank(1, 2, 0).is_main and Rank(0, 2, 1).is_main
    unreadable = "RANK and WORLD_SIZE must both be integers (launch with torchrun), got "
    for bad, message in [
        ({"RANK": "1"}, unreadable + "RANK='1', WORLD_SIZE=None, LOCAL_RANK=None"),
        ({"WORLD_SIZE": "2"}, unreadable + "RANK=None, WORLD_SIZE='2', LOCAL_RANK=None"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, unreadable + "RANK='x', WORLD_SIZE='2', LOCAL_RANK=None"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "y"}, unreadable + "RANK='0', WORLD_SIZE='2', LOCAL_RANK='y'"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "inconsistent RANK=2, WORLD_SIZE=2, LOCAL_RANK=2"),
        ({"RANK": "-1", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "inconsistent RANK=-1, WORLD_SIZE=2, LOCAL_RANK=0"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "inconsistent RANK=0, WORLD_SIZE=0, LOCAL_RANK=0"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "inconsistent RANK=0, WORLD_SIZE=2, LOCAL_RANK=-1"),
    ]:
        with pytest.raises(DistributedError) as caught:
            distributed.detect(bad)
        assert str(caught.value) == message


def test_collective_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVZOO_DIST_TIMEOUT", raising=False)
    assert distributed.timeout() == timedelta(seconds=60)
    monkeypatch.setenv("CONVZOO_DIST_TIMEOUT", "  ")
    assert distributed.timeout() == timedelta(seconds=60)
    monkeypatch.setenv("CONVZOO_DIST_TIMEOUT", " 7.5 ")
    assert distributed.timeout() == timedelta(seconds=7.5)
    monkeypatch.setenv("CONVZOO_DIST_TIMEOUT", "0.5")
    assert distributed.timeout() == timedelta(seconds=0.5)
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv("CONVZOO_DIST_TIMEOUT", bad)
        with pytest.raises(DistributedError) as caught:
            distributed.timeout()
        assert str(caught.value) == f"CONVZOO_DIST_TIMEOUT must be a positive number of seconds, got {bad!r}"


def test_shards_partition_the_test_set() -> None:
    assert distributed.shard(10, None) == slice(0, 10)
    for n in range(0, 40):
        for world in range(1, 9):
            parts = [range(n)[distributed.shard(n, Rank(r, world, r))] for r in range(world)]
            assert [i for part in parts for i in part] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_collectives_are_no_ops_in_one_process() -> None:
    t = torch.arange(5)
    distributed.all_reduce_sum(t)
    assert torch.equal(t, torch.arange(5)) and distributed.all_gather_cat(t) is t
    with distributed.together("doing nothing"):
        pass
    assert distributed.is_peer_failure(RuntimeError("[gloo/transport/tcp/pair.cc:537] Connection reset by peer"))
    assert not distributed.is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.parametrize("exc, peer", [
    (RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Read error"), True),
    (RuntimeError("NCCL error in: ProcessGroupNCCL.cpp, remote process exited"), True),
    (RuntimeError("Connection closed by peer [127.0.0.1]:29500"), True),
    (RuntimeError("Socket Timed out after 60000 ms"), True),
    (torch.distributed.DistError("something the backend raised"), True),
    (RuntimeError("CUDA out of memory"), False),
    (ValueError("connection to the gloo server timed out"), False),  # only a RuntimeError from a collective
])
def test_what_counts_as_a_lost_peer(exc: BaseException, peer: bool) -> None:
    assert distributed.is_peer_failure(exc) is peer


AGREE = """
import json, sys
import torch.distributed as dist
from convzoo import distributed
from convzoo.errors import ConfigError
dist.init_process_group("gloo")
for config in json.loads(sys.argv[1]):
    try:
        distributed.agree(config)
        print("agreed")
    except ConfigError as exc:
        print(f"error: {exc}")
dist.destroy_process_group()
"""


def _agree_in_two_ranks(first: list[dict], second: list[dict], tmp_path: Path) -> list[list[str]]:
    """``distributed.agree`` called in two real gloo ranks on each of ``first`` and ``second``'s configurations
    in turn; each rank's lines."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(distributed.__file__).parents[1])
    procs = [subprocess.Popen([sys.executable, "-c", AGREE, json.dumps(config)], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**ENV, "PYTHONPATH": src, "HOME": str(tmp_path), "MASTER_ADDR": "127.0.0.1",
                                   "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": "2"})
             for rank, config in enumerate((first, second))]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    return [out.splitlines() for out, _ in outputs]


@pytest.mark.slow  # seconds: torchrun, gloo ranks or whole trainings
def test_ranks_given_other_values_stop_on_every_rank_naming_the_flag(tmp_path: Path) -> None:
    config = {"model": "lenet", "seed": 0, "lr": 0.1, "epochs": 3, "batch_size": 32}
    lines = _agree_in_two_ranks([config, config], [{**config, "seed": 1, "batch_size": 64}, dict(config)], tmp_path)
    expected = ("error: ranks disagree on --seed: rank 0 has 0, rank 1 has 1; on --batch-size: rank 0 has 32, "
                "rank 1 has 64; give every rank the same command")
    assert lines == [[expected, "agreed"], [expected, "agreed"]]  # every rank stops; the same command goes on


def test_agree_is_a_no_op_in_one_process() -> None:
    distributed.agree({"seed": 0})


# --- the collectives, in a world of threads ---------------------------------------------------------------------------

class World:
    """``world`` ranks as threads of this process, with the collectives ``convzoo.distributed`` calls: each rank's
    contribution is exchanged at a barrier, and a gathered tensor must have the same shape on every rank, as gloo
    and NCCL require. ``run(f, args...)`` calls ``f(args[r])`` on rank ``r``; the ranks' results or errors."""

    ReduceOp = torch.distributed.ReduceOp
    DistError = torch.distributed.DistError

    def __init__(self, world: int) -> None:
        import threading

        self.world, self.barrier, self.local = world, threading.Barrier(world, timeout=10), threading.local()
        self.slots: list = [None] * world
        self.reduced: list = []

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_world_size(self) -> int:
        return self.world

    def _exchange(self, value: object) -> list:
        self.slots[self.local.rank] = value
        self.barrier.wait()
        everyone = list(self.slots)
        self.barrier.wait()
        return everyone

    def all_gather(self, outputs: list[torch.Tensor], tensor: torch.Tensor) -> None:
        assert len(outputs) == self.world
        for output, part in zip(outputs, self._exchange(tensor.clone())):
            assert output.shape == part.shape and output.dtype == part.dtype, (output.shape, part.shape)
            output.copy_(part)

    def all_gather_object(self, outputs: list, obj: object) -> None:
        assert len(outputs) == self.world
        outputs[:] = self._exchange(obj)

    def all_reduce(self, tensor: torch.Tensor, op=torch.distributed.ReduceOp.SUM) -> None:
        assert op == torch.distributed.ReduceOp.SUM
        self.reduced.append((tensor.dtype, tensor.device))
        tensor.copy_(sum(self._exchange(tensor.clone())))

    def run(self, function, *args) -> list:
        import threading

        results: list = [None] * self.world

        def rank(r: int) -> None:
            self.local.rank = r
            try:
                results[r] = function(args[r])
            except Exception as exc:  # noqa: BLE001 (the test looks at each rank's error)
                results[r] = exc

        threads = [threading.Thread(target=rank, args=(r,)) for r in range(self.world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        return results


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch):
    """``world(n)``: ``convzoo.distributed`` talks to ``n`` ranks that are threads of this test."""
    def make(n: int) -> World:
        fake = World(n)
        monkeypatch.setattr(distributed, "dist", fake)
        return fake
    return make


def test_gathering_concatenates_every_ranks_shard_in_rank_order(world) -> None:
    shards = [torch.tensor([1, 2, 3]), torch.tensor([4, 5]), torch.tensor([], dtype=torch.int64), torch.tensor([6])]
    results = world(4).run(distributed.all_gather_cat, *shards)
    for result in results:
        assert result.dtype == torch.int64 and torch.equal(result, torch.tensor([1, 2, 3, 4, 5, 6]))
    floats = world(2).run(distributed.all_gather_cat, torch.tensor([0.5]), torch.tensor([1.5, 2.5]))
    assert all(torch.equal(r, torch.tensor([0.5, 1.5, 2.5])) for r in floats)


def test_sums_are_over_every_rank(world) -> None:
    def reduce(values: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        distributed.all_reduce_sum(*values)
        return values

    results = world(3).run(reduce, *[(torch.tensor(float(r)), torch.tensor([r, 10 * r])) for r in range(3)])
    for loss, counts in results:
        assert loss == 3.0 and torch.equal(counts, torch.tensor([3, 30]))


def test_a_block_that_fails_on_one_rank_fails_on_all(world) -> None:
    def block(fails: bool) -> str:
        with distributed.together("setting up the run"):
            if fails:
                raise OSError("disk full")
        return "done"

    fake = world(3)
    results = fake.run(block, False, True, False)
    assert isinstance(results[1], OSError) and str(results[1]) == "disk full"  # its own error
    for r in (0, 2):
        assert isinstance(results[r], distributed.PeerFailure)
        assert str(results[r]) == "another rank failed while setting up the run (its error is above)"
        assert results[r].exit_code == 1
    assert fake.reduced == [(torch.int32, torch.device("cpu"))] * 3
    assert world(3).run(block, False, False, False) == ["done"] * 3


def _agree(world, configs: list[dict], local: tuple[str, ...] = ()) -> list:
    def agree(config: dict) -> str:
        distributed.agree(config, local=local)
        return "agreed"

    results = world(len(configs)).run(agree, *configs)
    for result in results:
        if isinstance(result, Exception):
            assert isinstance(result, convzoo.errors.ConfigError)
    return [r if isinstance(r, str) else (str(r), r.field) for r in results]


def test_ranks_given_other_values_are_named_with_each_ranks_value(world) -> None:
    config = {"model": "lenet", "seed": 0, "lr": 0.1, "epochs": 3, "batch_size": 32}
    expected = ("ranks disagree on --seed: rank 0 has 0, rank 1 has 1; on --batch-size: rank 0 has 32, rank 1 has 64; "
                "give every rank the same command", "seed")
    assert _agree(world, [config, {**config, "seed": 1, "batch_size": 64}]) == [expected, expected]
    three = ("ranks disagree on --lr: ranks 0, 2 have 0.1, rank 1 has 0.2; give every rank the same command", "lr")
    assert _agree(world, [config, {**config, "lr": 0.2}, config]) == [three] * 3
    missing = ('ranks disagree on --augment: rank 0 has (not given), rank 1 has true; give every rank the same '
               'command', "augment")
    assert _agree(world, [config, {**config, "augment": True}]) == [missing] * 2
    assert _agree(world, [config, dict(config)]) == ["agreed"] * 2


def test_ranks_may_differ_in_their_local_settings(world) -> None:
    configs = [{"seed": 0, "data_dir": "/a", "threads": 4, "out": Path("/runs/x")},
               {"seed": 0, "data_dir": "/b", "threads": 8, "out": Path("/runs/x")}]
    assert _agree(world, configs, local=("threads", "data_dir")) == ["agreed"] * 2
    nested = [{"split": {"rule": "first", "fraction": 0.1}}, {"split": {"fraction": 0.1, "rule": "first"}}]
    assert _agree(world, nested) == ["agreed"] * 2  # the same mapping, written in another order


def test_joining_and_leaving_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A world of one real gloo rank in this process: ``init`` joins it with the timeout and leaves it at
    ``destroy``; a group the caller made is used and left alone."""
    import torch.distributed as dist

    joined: list = []
    real = dist.init_process_group
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: joined.append((a, k)) or real(*a, **k))
    monkeypatch.setenv("CONVZOO_DIST_TIMEOUT", "12")
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
                        "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    try:
        assert distributed.init(Rank(0, 1, 0), torch.device("cpu")) == torch.device("cpu")
        assert joined == [(("gloo",), {"timeout": timedelta(seconds=12), "device_id": None})]
        assert dist.is_initialized() and dist.get_backend() == "gloo" and distributed.active()
        assert distributed._device == torch.device("cpu")
        t = torch.tensor([1.0, 2.0])
        distributed.all_reduce_sum(t)
        assert torch.equal(t, torch.tensor([1.0, 2.0])) and torch.equal(distributed.all_gather_cat(t), t)
        distributed.agree({"seed": 0})
        with distributed.together("checking"):
            pass
    finally:
        distributed.destroy()
    assert not dist.is_initialized() and distributed._device is None and not distributed.active()
    # a group that already exists is the caller's: used, never ended here
    real("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert distributed.init(Rank(0, 1, 0), torch.device("cpu")) == torch.device("cpu") and len(joined) == 1
        distributed.destroy()
        assert dist.is_initialized() and distributed._device is None
    finally:
        dist.destroy_process_group()


def test_a_rank_without_its_device_or_its_group_is_told_why(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(DistributedError) as caught:
        distributed.init(Rank(0, 1, 0), torch.device("cpu"))
    assert str(caught.value).startswith("cannot join the process group (") and "MASTER_ADDR" in str(caught.value)
    assert str(caught.value).endswith("); launch with torchrun")
    assert not torch.distributed.is_initialized()
    distributed.destroy()
    with pytest.raises(DistributedError) as caught:
        distributed.init(Rank(0, 1, 0), torch.device("meta"))
    assert str(caught.value) == "distributed training runs on CUDA (NCCL) or the CPU (gloo), not on meta"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DistributedError) as caught:
        distributed.init(Rank(2, 3, 2), torch.device("cuda"))
    assert str(caught.value) == "LOCAL_RANK 2 has no GPU: this node has 2 (use --nproc_per_node <= that)"


def test_a_cuda_rank_joins_with_nccl_on_its_local_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NCCL path, with the GPU calls recorded instead of made (this test runs on any machine)."""
    import torch.distributed as dist

    calls: list = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append(("init_process_group", a, k)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    monkeypatch.delenv("CONVZOO_DIST_TIMEOUT", raising=False)
    try:
        assert distributed.init(Rank(3, 4, 1), torch.device("cuda")) == torch.device("cuda", 1)
        assert distributed._device == torch.device("cuda", 1)
    finally:
        distributed.destroy()
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("init_process_group", ("nccl",), {"timeout": timedelta(seconds=60),
                                                        "device_id": torch.device("cuda", 1)})]
    # (the group is already gone: destroy leaves it be)
    assert distributed._device is None and distributed._owned is False


def test_the_collectives_tensors_are_made_on_the_ranks_device(world, monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL sends only CUDA tensors: every tensor a collective makes goes to the device of the tensor it gathers, or to
    the rank's device (``init``'s; the CPU before it). Recorded here, as this machine may have no GPU."""
    made: list = []

    class Torch:
        def __getattr__(self, name: str):
            return getattr(torch, name)

        def tensor(self, data, **kwargs):
            made.append(("tensor", kwargs.get("device", "(not given)")))
            return torch.tensor(data, **{k: v for k, v in kwargs.items() if k != "device"})

        def zeros(self, *size, **kwargs):
            made.append(("zeros", kwargs.get("device", "(not given)")))
            return torch.zeros(*size, **{k: v for k, v in kwargs.items() if k != "device"})

    monkeypatch.setattr(distributed, "torch", Torch())
    shard = torch.tensor([1, 2])
    world(1).run(distributed.all_gather_cat, shard)
    assert made == [("tensor", shard.device), ("zeros", shard.device)]
    made.clear()
    world(1).run(distributed._count_failures, 0)
    assert made == [("tensor", "cpu")]
    made.clear()
    monkeypatch.setattr(distributed, "_device", torch.device("cpu", 0))
    world(1).run(distributed._count_failures, 0)
    assert made == [("tensor", torch.device("cpu", 0))]
