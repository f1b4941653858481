"""Initial weights: Xavier (the book's), He (deep ReLU stacks), PyTorch's default."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from convzoo.models import init_weights


@pytest.mark.parametrize("scheme", ["xavier", "kaiming", "default"])
def test_init_schemes(scheme: str) -> None:
    from convzoo.models import create_model, init_weights

    torch.manual_seed(0)
    model = create_model("vgg11_small", input_size=32)
    init_weights(model, scheme)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 64)
    fan_in, fan_out = conv.weight[0].numel(), conv.out_channels * 9
    std = {"xavier": math.sqrt(2 / (fan_in + fan_out)), "kaiming": math.sqrt(2 / fan_out),
           "default": math.sqrt(1 / (3 * fan_in))}[scheme]  # PyTorch's: uniform with bound 1/sqrt(fan_in)
    assert float(conv.weight.std()) == pytest.approx(std, rel=0.05)
    if scheme == "kaiming":
        assert all(float(m.bias.abs().max()) == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert all(float(m.weight.std()) == pytest.approx(0.01, rel=0.05)
                   for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_init_is_a_train_flag(tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = run_cli("train", "lenet", "--init", "he", "--out", str(tmp_path / "r"))
    assert code == 2 and "--init" in err and "kaiming" in err


def _toy() -> nn.Sequential:
    """Large enough layers for statistics; fan-in differs from fan-out everywhere; a conv without bias;
    batch norm, which no scheme may touch."""
    return nn.Sequential(
        nn.Conv2d(16, 64, kernel_size=3), nn.BatchNorm2d(64), nn.ReLU(),  # fan_in 144, fan_out 576
        nn.Conv2d(64, 32, kernel_size=3, bias=False),  # fan_in 576, fan_out 288
        nn.Flatten(), nn.Linear(200, 500), nn.BatchNorm1d(500), nn.Linear(500, 100),
    )


def _fans(module: nn.Module) -> tuple[int, int]:
    receptive = module.weight[0, 0].numel()  # k*k for a convolution, 1 for a linear layer
    return module.weight.shape[1] * receptive, module.weight.shape[0] * receptive


def _learnable(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _batch_norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    with torch.no_grad():  # a non-default start, so that a scheme touching batch norm shows
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_()
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("1.", "6."))}


def test_xavier_is_the_books_uniform_with_the_biases_kept() -> None:
    torch.manual_seed(0)
    model = _toy()
    bn_before = _batch_norm_state(model)
    biases = {k: model.state_dict()[k].clone() for k in ("0.bias", "5.bias", "7.bias")}
    torch.manual_seed(1)
    init_weights(model, "xavier")
    for m in _learnable(model):  # U(-a, a) with a = sqrt(6 / (fan_in + fan_out)): variance 2 / (fan_in + fan_out)
        bound = math.sqrt(6 / sum(_fans(m)))
        assert float(m.weight.abs().max()) <= bound
        assert float(m.weight.abs().max()) > 0.99 * bound  # thousands of draws reach the bound
        assert float(m.weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    # Exactly nn.init.xavier_uniform_, layer by layer in module order, from the same seed.
    expected = _toy()
    torch.manual_seed(1)
    for m in _learnable(expected):
        nn.init.xavier_uniform_(m.weight)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(_learnable(model), _learnable(expected), strict=True))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in {**biases, **bn_before}.items())
    assert sum(float(v.abs().sum()) for v in biases.values()) > 0  # PyTorch's biases were not zero


def test_kaiming_is_he_normal_fan_out_for_convolutions_small_normal_for_linear_and_zero_biases() -> None:
    torch.manual_seed(0)
    model = _toy()
    bn_before = _batch_norm_state(model)
    torch.manual_seed(1)
    init_weights(model, "kaiming")
    for m in _learnable(model):
        std = math.sqrt(2 / _fans(m)[1]) if isinstance(m, nn.Conv2d) else 0.01  # He: gain sqrt(2) over fan_out
        assert float(m.weight.std()) == pytest.approx(std, rel=0.05)
        assert abs(float(m.weight.mean())) < 0.1 * std
        assert m.bias is None or torch.equal(m.bias, torch.zeros_like(m.bias))
    expected = _toy()
    torch.manual_seed(1)
    for m in _learnable(expected):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.normal_(m.weight, 0.0, 0.01)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(_learnable(model), _learnable(expected), strict=True))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in bn_before.items())


def test_default_keeps_pytorchs_initialisation() -> None:
    torch.manual_seed(0)
    model = _toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_weights(model, "default")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        init_weights(_toy(), "he")
    assert str(info.value) == "init must be one of xavier, kaiming, default, got 'he'"
