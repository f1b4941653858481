"""Initial weights: Xavier (the book's), He (deep ReLU stacks), PyTorch's default."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch


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
