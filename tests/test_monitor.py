"""Watching a run: divergence (NaN, infinite, or an exploding loss) and a run stuck at chance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from convzoo.config import recipe
from convzoo.errors import DivergenceError
from convzoo.monitor import EXPLOSION, LossWatch, fell_back, finished_at_chance, not_learning

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


def watch(**overrides: object) -> LossWatch:
    hint = "D keeps 1 completed epoch; continue with: convzoo train --resume D"
    return LossWatch(recipe("lenet", **overrides),
                     lambda **changes: hint + "".join(f" --{k} {v:g}" for k, v in changes.items()))


def test_a_finite_falling_loss_passes() -> None:
    w = watch()
    for seen, mean in [(32, 2.3), (64, 2.0), (96, 1.0)]:
        w.check(torch.tensor(mean * seen), seen, (0, seen // 32 - 1, 3), 0.9)
    assert w.start == pytest.approx(2.3)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_stop_the_run(value: float) -> None:
    with pytest.raises(DivergenceError, match=f"became {value}"):
        watch().check(torch.tensor(value), 32, (0, 0, 8), 0.9)


def test_an_exploding_loss_stops_the_run() -> None:
    w = watch()
    w.check(torch.tensor(2.3 * 32), 32, (0, 0, 8), 0.9)
    w.check(torch.tensor(EXPLOSION * 2.3 * 64 * 0.99), 64, (0, 1, 8), 0.9)  # just below the limit: goes on
    with pytest.raises(DivergenceError, match=r"grew from 2.3 to 232 .*try --lr 0.09") as info:
        w.check(torch.tensor(EXPLOSION * 2.3 * 64 * 1.01), 64, (0, 1, 8), 0.9)
    assert str(info.value).endswith("continue with: convzoo train --resume D --lr 0.09") and info.value.exit_code == 3


def test_a_resumed_run_with_a_low_loss_is_not_stopped_by_noise() -> None:
    w = watch()
    w.check(torch.tensor(0.05 * 32), 32, (5, 0, 8), 0.9)
    w.check(torch.tensor(6.0 * 64), 64, (5, 1, 8), 0.9)  # 120 times the start, but below 100 x ln 10
    assert w.limit == pytest.approx(EXPLOSION * math.log(10))


def test_the_advice_names_momentum_when_it_is_the_cause() -> None:
    with pytest.raises(DivergenceError, match="--momentum 1.5 makes SGD diverge at any learning rate; a lower "
                                              "learning rate cannot help"):
        watch(momentum=1.5).check(torch.tensor(math.nan), 32, (0, 0, 8), 0.1)


def test_the_advice_says_when_the_learning_rate_is_already_tiny() -> None:
    with pytest.raises(DivergenceError, match="already tiny, so lowering it further is unlikely to help"):
        watch(lr=1e-8).check(torch.tensor(math.nan), 32, (0, 0, 8), 1e-8)


def test_an_exploding_run_exits_3_and_keeps_its_epoch(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "lenet", "--lr", "50", "--epochs", "3", "--batch-size", "32", "--limit-train",
                           "256", "--limit-test", "32", "--data-dir", str(SLICE), "--device", "cpu", "--out", str(out))
    assert code == 3 and "grew from" in err and "Traceback" not in err, err
    assert (out / "checkpoint.safetensors").is_file()


def test_not_learning_is_reported_at_chance_only() -> None:
    config = recipe("nin")
    assert "nin is not learning" in not_learning(rows(0.1, 0.11), config)
    assert not_learning(rows(0.1, 0.5), config) is None


def rows(*accuracies: float, loss: float = 1.0) -> list[dict]:
    return [{"test_acc": a, "train_loss": loss} for a in accuracies]


def test_a_loss_at_ln_10_points_to_the_initialisation_not_the_learning_rate() -> None:
    message = not_learning(rows(0.1, 0.1, loss=2.3026), recipe("nin"))
    assert "sits at ln 10 = 2.303" in message and "--init kaiming" in message
    assert "lower the learning rate" not in message
    assert "lower the learning rate (e.g. --lr 0.01)" in not_learning(rows(0.1, 0.1, loss=2.9), recipe("nin"))


def test_a_run_that_falls_back_to_chance_is_reported() -> None:
    config = recipe("lenet")
    assert fell_back(rows(0.1, 0.1), config) is None and fell_back(rows(0.6, 0.7), config) is None
    assert "fell back to chance: test accuracy 0.1000 in epoch 3, after 0.7000 in epoch 2" in \
        fell_back(rows(0.5, 0.7, 0.1), config)


def test_a_run_that_ends_at_chance_says_so() -> None:
    config = recipe("lenet")
    assert finished_at_chance(rows(0.5, 0.9), config) is None
    assert "finished at chance: test accuracy 0.1000 after 1 epoch;" in finished_at_chance(rows(0.1), config)
