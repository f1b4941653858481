"""The training step: eager everywhere, replayed from a CUDA graph on CUDA, compiled or not.

The CUDA tests run only where a GPU is present (the project's GPU sessions run them with
``pytest tests/test_step.py``); on the CPU, ``--cuda-graphs`` must change nothing, and a compiled
step must train as the eager one does.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from convzoo import step as step_module
from convzoo.checkpoint import load_model
from convzoo.config import recipe
from convzoo.data import Batches, load_split
from convzoo.errors import ConfigError
from convzoo.models import create_model, init_weights
from convzoo.optim import make_optimizer
from convzoo.runtime import compute_settings, uses_cuda_graphs
from convzoo.step import WARMUP, TrainStep, _no_recompilation, autocast
from convzoo.train import fit, load_batches

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _batches(device: str, n: int = 600, batch: int = 64) -> Batches:
    """``n`` random images in batches of ``batch``: several full ones, then a partial one."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return Batches(images, labels, batch, shuffle=True, device=device)


def _train(model_name: str, device: str, *, graph: bool, epochs: int = 2, amp: bool = False, compiled: bool = False,
           n: int = 600, **overrides: object):
    """Train ``model_name`` (``torch.compile``-d with ``compiled``) on ``_batches(n=n)`` with a one-cycle
    schedule; the weights, sums and step."""
    torch.manual_seed(0)
    dev = torch.device(device)
    config = recipe(model_name, "fast", amp=amp, cuda_graphs=graph, compile=compiled, **overrides)
    model = create_model(model_name).to(dev)
    optimizer = make_optimizer(model, config, device=dev, graphable=graph)
    net = torch.compile(model) if compiled else model  # as fit does
    step = TrainStep(net, nn.CrossEntropyLoss(label_smoothing=0.1), optimizer, dev, amp=amp, cuda_graph=graph)
    data = _batches(device, n=n)
    sums = []
    total = epochs * len(data)
    for epoch in range(epochs):
        data.set_epoch(epoch)
        step.reset()
        for i, (x, y) in enumerate(data):
            step.set_lr(config.lr * (1 - (epoch * len(data) + i) / total))
            step(x, y)
        sums.append((float(step.loss_sum), int(step.correct)))
    return model, sums, step


def test_the_step_accumulates_the_epoch_sums_on_the_device() -> None:
    model, sums, step = _train("lenet", "cpu", graph=False, epochs=1)
    assert step.graph is None and step.replays == 0
    loss, correct = sums[0]
    assert 0 < loss / 600 < 5 and 0 <= correct <= 600


def _epochs_of_real_batches(n: int = 150, batch: int = 64, epochs: int = 2) -> list[list[tuple[torch.Tensor, ...]]]:
    """The batches of ``epochs`` shuffled epochs of the first ``n`` images of the committed slice of the real data
    (two full batches and a partial one an epoch by default), materialized so that two runs see the same tensors."""
    images, labels = load_split("train", SLICE)
    data = Batches(images[:n], labels[:n], batch, shuffle=True)
    out = []
    for epoch in range(epochs):
        data.set_epoch(epoch)
        out.append(list(data))
    return out


def _reference_training(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                        epochs: list[list[tuple[torch.Tensor, ...]]], rates: list[float], amp: bool) -> list[tuple]:
    """The training step written out by hand: forward (bf16 autocast with ``amp``), loss, zero_grad, backward,
    update; the epoch's loss sum (loss x batch size) and correct count accumulated in float32 and int64 tensors."""
    rate = iter(rates)
    sums = []
    for batches in epochs:
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
        for x, y in batches:
            for group in optimizer.param_groups:
                group["lr"] = next(rate)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
                loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
        sums.append((loss_sum.item(), correct.item()))
    return sums


@pytest.mark.parametrize("amp", [False, True])
def test_with_the_graph_flag_on_the_cpu_a_step_is_the_hand_written_training_step(amp: bool, one_thread: None) -> None:
    """``cuda_graph`` is ignored on the CPU: ``TrainStep`` trains exactly (same kernels, bit for bit) as the
    reference loop above from the same weights on the same batches, with a rate set before every step."""
    torch.manual_seed(0)
    model = create_model("lenet")
    reference = copy.deepcopy(model)
    start = [p.detach().clone() for p in model.parameters()]
    config = recipe("lenet", "fast")  # SGD, Nesterov momentum 0.9, weight decay 5e-4
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    epochs = _epochs_of_real_batches()
    rates = [0.1 * (1 - k / 6) for k in range(6)]
    cpu = torch.device("cpu")
    step = TrainStep(model, loss_fn, make_optimizer(model, config, device=cpu, graphable=True), cpu,
                     cuda_graph=True, batch_size=64, **({"amp": True} if amp else {}))  # amp off by default
    sums, rate = [], iter(rates)
    for batches in epochs:
        step.reset()
        for x, y in batches:
            step.set_lr(next(rate))
            step(x, y)
        sums.append((step.loss_sum.item(), step.correct.item()))
    assert step.cuda_graph is False and step.graph is None and step.replays == 0
    want = _reference_training(reference, make_optimizer(reference, config), loss_fn, epochs, rates, amp)
    assert sums == want
    assert 0 < want[1][1] < 150 and want[0][1] != want[1][1]  # counts that tell right from wrong
    for a, b, before in zip(model.parameters(), reference.parameters(), start, strict=True):
        assert torch.equal(a, b) and not torch.equal(a, before)


def _tiny_step(**kwargs: object) -> TrainStep:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    return TrainStep(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"),
                     **kwargs)


def test_reset_zeroes_the_sums_in_place() -> None:
    """In place: a captured graph keeps adding into the same tensors."""
    step = _tiny_step()
    step(torch.ones(2, 4), torch.tensor([0, 1]))
    loss_sum, correct = step.loss_sum, step.correct
    assert float(loss_sum) > 0
    step.loss_sum.fill_(3.0)
    step.correct.fill_(2)
    step.reset()
    assert step.loss_sum is loss_sum and step.correct is correct
    assert float(loss_sum) == 0.0 and int(correct) == 0


def test_the_sums_start_at_zero_on_the_steps_device() -> None:
    with torch.device("meta"):  # another default device: the sums must still be made on the step's
        step = _tiny_step(batch_size=8)
    assert step.loss_sum.device == step.correct.device == torch.device("cpu")
    assert step.loss_sum.dtype == torch.float32 and step.correct.dtype == torch.int64
    assert step.loss_sum.shape == step.correct.shape == ()
    assert float(step.loss_sum) == 0.0 and int(step.correct) == 0
    assert step.batch_size == 8 and step.amp is False and step.cuda_graph is False
    assert step.graph is None and step.replays == 0


def test_the_graph_flag_is_honoured_on_cuda_and_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CUDA device (its sums made on the CPU here, where there may be no GPU) the flag is kept; no flag, no
    graph. On the CPU the flag is dropped (the tests above)."""
    zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *args, device, **kwargs: zeros(*args, **kwargs))
    model, cuda = nn.Linear(2, 2), torch.device("cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert TrainStep(model, nn.CrossEntropyLoss(), optimizer, cuda, cuda_graph=True).cuda_graph is True
    assert TrainStep(model, nn.CrossEntropyLoss(), optimizer, cuda).cuda_graph is False


def test_the_step_frees_the_gradients_before_the_backward_pass() -> None:
    """``zero_grad(set_to_none=True)``: each backward makes new gradient tensors (in a graph's memory pool),
    the previous step's are not written over."""
    step = _tiny_step()
    x, y = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1])
    step(x, y)
    first = [p.grad for p in step.model.parameters()]
    kept = [g.clone() for g in first]
    step(x, y)
    for p, g, k in zip(step.model.parameters(), first, kept, strict=True):
        assert p.grad is not g and torch.equal(g, k)


def test_set_lr_writes_every_group_and_skips_an_unchanged_rate() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": a.parameters()}, {"params": b.parameters(), "lr": 0.5}], lr=0.1)
    step = TrainStep(a, nn.CrossEntropyLoss(), optimizer, torch.device("cpu"))
    step.set_lr(0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.25]
    optimizer.param_groups[1]["lr"] = 0.75  # changed behind the step's back: the same rate again is skipped
    step.set_lr(0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.75]
    step.set_lr(0.125)
    assert [g["lr"] for g in optimizer.param_groups] == [0.125, 0.125]


def test_a_graphed_step_warms_up_on_a_side_stream_then_captures_a_full_batch_then_replays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The order of a graphed step's work, checked on the CPU with ``torch.cuda``'s stream calls recorded and the
    capture and replay stood in for (their CUDA side is tested by the GPU tests below): a partial batch runs
    eagerly; the first ``WARMUP`` full ones run on a side stream that waits for the current stream's work and
    that the current stream then waits for; the next full batch is captured; later full batches are copied into
    the captured batch's tensors and replayed, partial ones still run eagerly."""
    events: list[tuple] = []

    class Stream:
        def __init__(self, device: torch.device, name: str = "side") -> None:
            events.append(("new stream", device))
            self.name = name

        def wait_stream(self, other: Stream) -> None:
            events.append((self.name, "waits for", other.name))

    def current_stream(device: torch.device) -> Stream:
        events.append(("current stream", device))
        return current

    @contextlib.contextmanager
    def on(stream: Stream) -> Iterator[None]:
        events.append(("on", stream.name))
        yield
        events.append(("off", stream.name))

    current = Stream(torch.device("cpu"), "current")
    events.clear()
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "stream", on)

    step = _tiny_step(cuda_graph=True, batch_size=4)
    step.cuda_graph = True  # what the flag gives on CUDA
    eager = step._step
    monkeypatch.setattr(step, "_step", lambda x, y: events.append(("step", len(x))) or eager(x, y))

    class Graph:
        def replay(self) -> None:
            events.append(("replay", step._static[0].clone(), step._static[1].clone()))

    def capture(x: torch.Tensor, y: torch.Tensor) -> None:
        events.append(("capture", x, y))
        step._static, step.graph = (x.clone(), y.clone()), Graph()
        step.replays += 1

    monkeypatch.setattr(step, "_capture", capture)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator))
               for n in (2, 4, 4, 4, 4, 2, 4, 4)]
    cpu = torch.device("cpu")
    warm_up = [("new stream", cpu), ("current stream", cpu), ("side", "waits for", "current"), ("on", "side"),
               ("step", 4), ("off", "side"), ("current stream", cpu), ("current", "waits for", "side")]
    for i, (x, y) in enumerate(batches):
        events.clear()
        step(x, y)
        if i in (0, 5):  # partial batches, before and after the capture
            assert events == [("step", 2)]
        elif i <= WARMUP:
            assert events == warm_up and step._warm == i and step.graph is None
        elif i == WARMUP + 1:
            assert events == [("capture", x, y)] and events[0][1] is x and events[0][2] is y
        else:
            ((kind, static_x, static_y),) = events
            assert kind == "replay" and torch.equal(static_x, x) and torch.equal(static_y, y)
    assert step._warm == WARMUP and step.replays == 3


def test_the_capture_records_the_step_on_copies_of_the_batch_then_replays_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What ``_capture`` asks of ``torch.cuda``, checked on the CPU with the graph API stood in for (the GPU tests
    below run the real one): the batch copied with its strides (static inputs later batches are copied into), the
    gradients freed so that the capture allocates them in the graph's pool, the capture in thread-local error mode
    with recompilation refused, then one replay of that graph to train on the batch."""
    events: list[tuple] = []

    class Graph:
        def replay(self) -> None:
            events.append(("replay", self))

    @contextlib.contextmanager
    def graph(cuda_graph: Graph, *, capture_error_mode: str = "global") -> Iterator[None]:
        events.append(("capture", cuda_graph, capture_error_mode,
                       [p.grad for p in model.parameters()], stances.copy()))
        yield
        events.append(("captured",))

    stances: list[str] = []
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.compiler, "set_stance", lambda stance: stances.append(stance) or contextlib.nullcontext())
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    step = TrainStep(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))
    step.replays = 3  # replays are counted on
    step(torch.randn(2, 2, 2, 2), torch.tensor([0, 1]))  # an eager step: gradients exist
    x = torch.randn(2, 2, 2, 2).to(memory_format=torch.channels_last)
    y = torch.tensor([2, 0])
    step._capture(x, y)
    static_x, static_y = step._static
    assert static_x is not x and torch.equal(static_x, x) and static_x.stride() == x.stride() == (8, 1, 4, 2)
    assert static_y is not y and torch.equal(static_y, y)
    assert isinstance(step.graph, Graph)
    assert events == [("capture", step.graph, "thread_local", [None, None], ["fail_on_recompile"]), ("captured",),
                      ("replay", step.graph)]
    assert step.replays == 4


def test_compile_and_cuda_graphs_combine_when_both_are_asked_for() -> None:
    assert uses_cuda_graphs(recipe("lenet", compile=True, cuda_graphs=True), torch.device("cuda"))


@pytest.mark.slow
def test_a_compiled_step_trains_as_the_eager_one_does() -> None:
    """The code path of a compiled, graphed step up to its capture, on the CPU: compile in the warm-up, train.

    Inductor fuses the elementwise work and sums in another order than the eager kernels, so float32
    weights differ by rounding: after these 8 SGD-momentum steps by at most 1.5e-8 (1.3e-7 of the
    largest weight; measured with torch 2.13). The tolerance (1e-5 absolute, on weights of 0.05-0.2)
    leaves room for other compilers' choices and is still a hundred times below what one step on a
    wrong gradient moves a weight (lr 0.1 x gradients of 1e-2 to 1e-1).

    Inductor compiles C++ kernels for the CPU: about 40 s the first time on a 2-core machine, then
    about 4 s from its on-disk cache (``/tmp/torchinductor_$USER``).
    """
    eager, eager_sums, _ = _train("lenet", "cpu", graph=True, epochs=2, n=256)
    compiled, compiled_sums, _ = _train("lenet", "cpu", graph=True, epochs=2, n=256, compiled=True)
    for (loss_a, correct_a), (loss_b, correct_b) in zip(eager_sums, compiled_sums, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
        assert abs(correct_a - correct_b) <= 1
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cuda_graphs_by_default_on_cuda_in_one_process_without_compile() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert uses_cuda_graphs(recipe("lenet"), cuda)
    assert not uses_cuda_graphs(recipe("lenet"), cpu)
    assert not uses_cuda_graphs(recipe("lenet", compile=True), cuda)
    assert not uses_cuda_graphs(recipe("lenet"), cuda, distributed=True)
    assert not uses_cuda_graphs(recipe("lenet", cuda_graphs=False), cuda)
    assert uses_cuda_graphs(recipe("lenet", cuda_graphs=True), cuda)


def test_set_lr_writes_a_tensor_learning_rate_in_place() -> None:
    model = nn.Linear(3, 2)
    rate, other = torch.tensor(0.1), torch.tensor(0.3)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": other}], lr=rate)
    step = TrainStep(model, nn.CrossEntropyLoss(), optimizer, torch.device("cpu"))
    step.set_lr(0.25)
    assert optimizer.param_groups[0]["lr"] is rate and float(rate) == 0.25
    assert optimizer.param_groups[1]["lr"] is other and float(other) == 0.25
    rate.fill_(0.5)  # the same rate again is skipped
    step.set_lr(0.25)
    assert float(rate) == 0.5
    step.set_lr(0.75)
    assert float(rate) == float(other) == 0.75 and optimizer.param_groups[0]["lr"] is rate


def test_autocast_is_bfloat16_on_the_cpu_when_enabled() -> None:
    cpu = torch.device("cpu")
    with autocast(cpu, True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_cache_enabled()
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu, True, cache=False):
        assert torch.is_autocast_enabled("cpu") and not torch.is_autocast_cache_enabled()
    with autocast(cpu, False):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast(torch.device("mps"), True) as other:  # another device: left off
        assert not torch.is_autocast_enabled("cpu") and not other._enabled


def test_autocast_asks_torch_for_bfloat16_with_the_weight_cache_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """The arguments ``torch.autocast`` gets, on CUDA too (where this machine may have no GPU to run it)."""
    calls = []
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: calls.append((args, kwargs)))
    autocast(torch.device("cuda"), True)
    autocast(torch.device("cuda", 1), True, cache=False)
    autocast(torch.device("cuda"), False)
    autocast(torch.device("cpu"), False, cache=True)
    autocast(torch.device("mps"), True)
    assert calls == [(("cuda",), {"dtype": torch.bfloat16, "enabled": True, "cache_enabled": True}),
                     (("cuda",), {"dtype": torch.bfloat16, "enabled": True, "cache_enabled": False}),
                     (("cuda",), {"dtype": torch.bfloat16, "enabled": False, "cache_enabled": False}),
                     (("cpu",), {"dtype": torch.bfloat16, "enabled": False, "cache_enabled": False}),
                     (("mps",), {"dtype": torch.bfloat16, "enabled": False, "cache_enabled": False})]


@pytest.mark.parametrize("amp", [False, True])
def test_the_step_autocasts_as_asked_with_the_weight_cache(amp: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def recorded(device: torch.device, enabled: bool, cache: bool = True) -> torch.autocast:
        calls.append((device, enabled, cache))
        return autocast(device, enabled, cache)

    step = _tiny_step(amp=amp, cuda_graph=True, batch_size=4)
    monkeypatch.setattr(step_module, "autocast", recorded)
    step(torch.ones(2, 4), torch.tensor([0, 1]))
    step.cuda_graph = True  # as on CUDA: no cache, not even in the eager step of a batch of another size
    step(torch.ones(2, 4), torch.tensor([0, 1]))
    cpu = torch.device("cpu")
    assert calls == [(cpu, amp, True), (cpu, amp, False)] and step._warm == 0


def test_no_recompilation_sets_the_fail_on_recompile_stance(monkeypatch: pytest.MonkeyPatch) -> None:
    stances = []
    context = contextlib.nullcontext()
    monkeypatch.setattr(torch.compiler, "set_stance", lambda stance: stances.append(stance) or context)
    assert _no_recompilation() is context and stances == ["fail_on_recompile"]
    monkeypatch.delattr(torch.compiler, "set_stance")  # an older torch: nothing to set
    with _no_recompilation():
        pass
    assert stances == ["fail_on_recompile"]


def test_cuda_graphs_on_the_cpu_train_as_without(tmp_path: Path) -> None:
    """The flag reaches ``fit`` on the CPU and changes nothing: the run trains as the hand-written loop does
    (the model, its initialization and the batches made by ``fit``'s own helpers, tested in test_train.py)."""
    config = recipe("lenet", cuda_graphs=True, epochs=1, batch_size=64, limit_train=200, limit_test=100,
                    data_dir=str(SLICE), device="cpu", threads=torch.get_num_threads())  # the book's: SGD at 0.9
    result = fit(config, tmp_path / "run", log=lambda _: None, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["cuda_graphs"] is True

    torch.manual_seed(config.seed)
    model = create_model("lenet", input_size=28)
    init_weights(model, config.init)
    train, _, _ = load_batches(config, torch.device("cpu"), None)
    model.to(memory_format=torch.channels_last)
    train.set_epoch(0)
    assert [len(y) for _, y in train] == [64, 64, 64, 8]
    want = _reference_training(model, make_optimizer(model, config), nn.CrossEntropyLoss(), [list(train)],
                               [config.lr] * 4, amp=False)
    loss_sum, correct = want[0]
    assert result.history[0]["train_loss"] == round(loss_sum / 200, 6)
    assert result.history[0]["train_acc"] == round(correct / 200, 6)
    trained = load_model(tmp_path / "run" / "model.safetensors")
    for a, b in zip(trained.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


# --- on a GPU -----------------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("model_name, compiled", [("lenet", False), ("lenet_bn", False), ("lenet", True),
                                                   ("lenet_bn", True)])
def test_a_replayed_graph_trains_as_eager_steps_do(model_name: str, compiled: bool) -> None:
    """Same weights after two epochs (full batches replayed, the partial one eager), to float32 rounding;
    ``compiled``: the graph records the compiled step (Triton's fused kernels round as cuDNN's need not,
    well inside these tolerances: the compiled CPU step differs from the eager one by ~1e-7)."""
    with compute_settings(recipe(model_name, deterministic=True)):
        eager, eager_sums, _ = _train(model_name, "cuda", graph=False)
        graphed, graphed_sums, step = _train(model_name, "cuda", graph=True, compiled=compiled)
    assert step.graph is not None
    assert step.replays == 2 * (600 // 64) - WARMUP
    for (loss_a, correct_a), (loss_b, correct_b) in zip(eager_sums, graphed_sums, strict=True):
        assert loss_b == pytest.approx(loss_a, rel=1e-4)
        assert abs(correct_a - correct_b) <= 2
    for a, b in zip(eager.parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@cuda
@pytest.mark.parametrize("model_name, overrides", [
    ("lenet_modern", {"amp": True}),  # bf16 autocast, batch norm, SGD + Nesterov momentum
    ("alexnet", {"amp": True, "optimizer": "adamw", "lr": 1e-3, "resize": 67}),  # dropout, capturable AdamW
    ("alexnet", {"amp": True, "compile": True, "resize": 67}),  # a compiled step with dropout, captured
])
def test_graphed_fit_on_cuda_learns(model_name: str, overrides: dict, tmp_path: Path) -> None:
    config = recipe(model_name, "fast", epochs=2, batch_size=100, data_dir=str(SLICE), device="cuda",
                    cuda_graphs=True, augment=True, **overrides)
    result = fit(config, tmp_path / "run", log=lambda _: None, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.test_acc > 0.4
    eager = fit(replace(config, cuda_graphs=False), tmp_path / "eager", log=lambda _: None, progress=False)
    assert abs(result.test_acc - eager.test_acc) < 0.15


@cuda
def test_cuda_graphs_refuse_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    config = recipe("lenet", epochs=1, data_dir=str(SLICE), device="cuda", cuda_graphs=True)
    with pytest.raises(ConfigError, match="one process"):
        fit(config, tmp_path / "run", log=lambda _: None, progress=False)


def test_speed_flags_reach_the_run_config(tmp_path: Path, run_cli) -> None:  # noqa: ANN001
    code, _, err = run_cli("train", "lenet", "--epochs", "1", "--batch-size", "32", "--limit-train", "64",
                           "--limit-test", "32", "--data-dir", str(SLICE), "--device", "cpu", "--cuda-graphs",
                           "--no-autotune", "--out", str(tmp_path / "run"))
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["cuda_graphs"] is True and config["autotune"] is False


@cuda
def test_a_graphed_run_resumes(tmp_path: Path) -> None:
    """The resumed run captures its own graph, over the restored weights, optimizer state and learning rate."""
    config = recipe("lenet_bn", epochs=2, batch_size=100, data_dir=str(SLICE), device="cuda")  # constant lr
    whole = fit(config, tmp_path / "whole", log=lambda _: None, progress=False)
    fit(replace(config, epochs=1), tmp_path / "part", log=lambda _: None, progress=False)
    resumed = fit(config, tmp_path / "part", resume=True, log=lambda _: None, progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[1]["train_loss"] == pytest.approx(whole.history[1]["train_loss"], rel=0.05)
    assert abs(resumed.test_acc - whole.test_acc) < 0.05


@cuda
def test_only_a_full_batch_is_captured() -> None:
    """With three batches an epoch (64, 64, 22), the partial one is neither a warm-up step nor the recording."""
    dev = torch.device("cuda")
    model = create_model("lenet").to(dev)
    config = recipe("lenet", cuda_graphs=True)
    step = TrainStep(model, nn.CrossEntropyLoss(), make_optimizer(model, config, device=dev, graphable=True), dev,
                     cuda_graph=True, batch_size=64)
    data = _batches("cuda", n=150, batch=64)
    for epoch in range(3):
        data.set_epoch(epoch)
        for x, y in data:
            step(x, y)
    assert step.graph is not None and step._static[0].shape[0] == 64
    assert step.replays == 6 - WARMUP
