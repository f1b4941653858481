"""The training step: eager everywhere, replayed from a CUDA graph on CUDA, compiled or not.

The CUDA tests run only where a GPU is present (the project's GPU sessions run them with
``pytest tests/test_step.py``); on the CPU, ``--cuda-graphs`` must change nothing, and a compiled
step must train as the eager one does.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from convzoo.config import recipe
from convzoo.data import Batches
from convzoo.errors import ConfigError
from convzoo.models import create_model
from convzoo.optim import make_optimizer
from convzoo.runtime import backend_settings, uses_cuda_graphs
from convzoo.step import WARMUP, TrainStep
from convzoo.train import fit

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


def test_cuda_graphs_change_nothing_on_the_cpu() -> None:
    eager, eager_sums, _ = _train("lenet", "cpu", graph=False)
    graphed, graphed_sums, step = _train("lenet", "cpu", graph=True)
    assert step.graph is None
    assert eager_sums == graphed_sums
    for a, b in zip(eager.parameters(), graphed.parameters(), strict=True):
        assert torch.equal(a, b)


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
    rate = torch.tensor(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=rate)
    step = TrainStep(model, nn.CrossEntropyLoss(), optimizer, torch.device("cpu"))
    step.set_lr(0.25)
    assert optimizer.param_groups[0]["lr"] is rate and float(rate) == 0.25


def test_cuda_graphs_on_the_cpu_train_as_without(tmp_path: Path) -> None:
    common = dict(epochs=1, batch_size=64, limit_train=256, limit_test=100, data_dir=str(SLICE), device="cpu")
    with_graphs = fit(recipe("lenet", cuda_graphs=True, **common), tmp_path / "a", log=lambda _: None, progress=False)
    without = fit(recipe("lenet", **common), tmp_path / "b", log=lambda _: None, progress=False)
    assert with_graphs.history[0]["train_loss"] == without.history[0]["train_loss"]
    assert with_graphs.test_acc == without.test_acc


# --- on a GPU -----------------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("model_name, compiled", [("lenet", False), ("lenet_bn", False), ("lenet", True),
                                                   ("lenet_bn", True)])
def test_a_replayed_graph_trains_as_eager_steps_do(model_name: str, compiled: bool) -> None:
    """Same weights after two epochs (full batches replayed, the partial one eager), to float32 rounding;
    ``compiled``: the graph records the compiled step (Triton's fused kernels round as cuDNN's need not,
    well inside these tolerances: the compiled CPU step differs from the eager one by ~1e-7)."""
    with backend_settings(recipe(model_name, deterministic=True)):
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
