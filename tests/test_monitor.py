"""Watching a run: divergence (NaN, infinite, or an exploding loss) and a run stuck at chance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from convzoo.config import recipe
from convzoo.errors import DivergenceError
from convzoo.monitor import (
    EXPLOSION,
    LossWatch,
    at_chance,
    divergence_check_interval,
    fell_back,
    finished_at_chance,
    not_learning,
)
from convzoo.terms import PYTHON, speaking

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


# --- what a user reads, word for word (issue 26) ---------------------------------------------------------------------
# The messages below are written out by hand: a changed number, word or setting name fails here.
HINT = "D keeps 1 completed epoch; continue with: convzoo train --resume D"


def test_the_divergence_check_runs_every_step_on_the_cpu_and_every_50_on_a_gpu() -> None:
    assert divergence_check_interval(torch.device("cpu")) == 1
    assert divergence_check_interval(torch.device("cuda")) == 50
    assert divergence_check_interval(torch.device("mps")) == 50


def test_a_nan_loss_names_the_epoch_the_step_and_the_rate_and_suggests_a_tenth_of_the_recipes() -> None:
    with pytest.raises(DivergenceError) as info:
        watch().check(torch.tensor(math.nan), 32, (2, 4, 8), 0.5)  # the schedule's rate 0.5, the recipe's 0.9
    assert str(info.value) == ("the training loss became nan in epoch 3 (by step 5 of 8, lr 0.5): the learning rate "
                               "is likely too high for lenet with the d2l recipe; try --lr 0.09 (or --recipe fast). "
                               f"{HINT} --lr 0.09")


def test_the_fast_recipe_is_not_suggested_to_a_run_that_uses_it() -> None:
    with pytest.raises(DivergenceError) as info:
        watch(recipe="fast", lr=0.2).check(torch.tensor(math.inf), 32, (0, 0, 8), 0.1)
    assert str(info.value) == ("the training loss became inf in epoch 1 (by step 1 of 8, lr 0.1): the learning rate "
                               "is likely too high for lenet with the fast recipe; try --lr 0.02. "
                               f"{HINT} --lr 0.02")


def test_the_python_door_names_its_arguments() -> None:
    with speaking(PYTHON), pytest.raises(DivergenceError) as info:
        watch().check(torch.tensor(math.nan), 32, (0, 0, 8), 0.9)
    assert "try lr=0.09 (or recipe='fast')." in str(info.value)


def test_the_mean_loss_is_the_sum_over_the_examples_seen_and_at_least_over_one() -> None:
    w = watch()
    w.check(torch.tensor(2.5 * 4), 4, (0, 0, 8), 0.9)
    assert w.start == 2.5
    empty = watch()
    empty.check(torch.tensor(2.5), 0, (0, 0, 8), 0.9)  # no example seen yet: the sum itself
    assert empty.start == 2.5


def test_the_limit_is_100_times_the_first_loss_or_100_times_chances_loss_whichever_is_higher() -> None:
    assert watch().limit == pytest.approx(100 * math.log(10))  # before any check
    w = watch()
    w.check(torch.tensor(3.0), 1, (0, 0, 8), 0.9)
    assert w.limit == 300.0
    w.check(torch.tensor(0.1), 1, (0, 1, 8), 0.9)  # a later, lower loss does not move the start
    assert (w.start, w.limit) == (3.0, 300.0)
    hundred = LossWatch(recipe("lenet"), lambda **_: "", num_classes=100)
    assert hundred.limit == pytest.approx(100 * math.log(100))


def test_a_loss_exactly_at_the_limit_goes_on_and_one_above_it_stops() -> None:
    w = watch()
    w.check(torch.tensor(2.5), 1, (0, 0, 8), 0.9)  # the limit: 100 x 2.5 = 250, exactly
    w.check(torch.tensor(250.0), 1, (0, 1, 8), 0.9)
    with pytest.raises(DivergenceError) as info:
        w.check(torch.tensor(251.0), 1, (1, 2, 8), 0.9)
    assert str(info.value).startswith("the training loss grew from 2.5 to 251 in epoch 2 (by step 3 of 8, lr 0.9): ")


def test_a_first_loss_far_above_chance_is_the_start_not_a_divergence() -> None:
    w = watch()
    w.check(torch.tensor(1e6), 1, (0, 0, 8), 0.9)  # no start yet to compare with
    assert w.start == 1e6


def test_a_divergence_on_another_rank_stops_this_one_too(monkeypatch: pytest.MonkeyPatch) -> None:
    flags: list[torch.Tensor] = []

    def another_rank_diverged(flag: torch.Tensor) -> None:  # the sum over ranks of an integer flag of one element
        flags.append(flag.clone())
        flag.fill_(1)

    monkeypatch.setattr("convzoo.monitor.distributed.all_reduce_sum", another_rank_diverged)
    with pytest.raises(DivergenceError) as info:
        watch().check(torch.tensor(2.3), 1, (0, 6, 8), 0.9)
    assert str(info.value).startswith(
        "the training loss diverged on another rank in epoch 1 (by step 7 of 8, lr 0.9): ")
    assert [(f.dtype, f.shape, f.item()) for f in flags] == [(torch.int32, torch.Size([1]), 0)]
    w = watch()
    w.start = 2.5
    with pytest.raises(DivergenceError) as info:  # this rank's loss is at the limit, not past it
        w.check(torch.tensor(250.0), 1, (1, 0, 8), 0.9)
    assert str(info.value).startswith("the training loss diverged on another rank in epoch 2 (by step 1 of 8, ")


def test_a_nan_after_a_good_start_still_stops_the_run() -> None:
    w = watch()
    w.check(torch.tensor(2.3), 1, (0, 0, 8), 0.9)
    with pytest.raises(DivergenceError, match="^the training loss became nan in epoch 1 "):
        w.check(torch.tensor(math.nan), 1, (0, 1, 8), 0.9)


def test_a_momentum_of_1_diverges_whatever_the_rate() -> None:
    with pytest.raises(DivergenceError) as info:
        watch(momentum=1.0).check(torch.tensor(math.nan), 32, (0, 0, 8), 0.1)
    assert str(info.value) == ("the training loss became nan in epoch 1 (by step 1 of 8, lr 0.1): --momentum 1 makes "
                               "SGD diverge at any learning rate; a lower learning rate cannot help: use a momentum "
                               f"below 1 (0.9 is usual). {HINT}")
    with pytest.raises(DivergenceError) as below:
        watch(momentum=0.99).check(torch.tensor(math.nan), 32, (0, 0, 8), 0.1)
    assert "try --lr 0.09" in str(below.value)
    with pytest.raises(DivergenceError) as adamw:  # AdamW's betas are not this momentum
        watch(momentum=1.5, optimizer="adamw").check(torch.tensor(math.nan), 32, (0, 0, 8), 0.1)
    assert "makes SGD diverge" not in str(adamw.value) and "try --lr 0.09" in str(adamw.value)


def test_a_tiny_rate_points_to_the_other_settings() -> None:
    with pytest.raises(DivergenceError) as info:
        watch(lr=1e-7, weight_decay=0.5, init="kaiming").check(torch.tensor(math.nan), 32, (0, 0, 8), 9e-7)
    assert str(info.value) == ("the training loss became nan in epoch 1 (by step 1 of 8, lr 9e-07): the learning rate "
                               "is already tiny, so lowering it further is unlikely to help; check the other settings "
                               f"of the run (--weight-decay 0.5, --init kaiming). {HINT}")
    with pytest.raises(DivergenceError) as at_limit:  # 1e-6 is not yet tiny
        watch().check(torch.tensor(math.nan), 32, (0, 0, 8), 1e-6)
    assert "try --lr 0.09" in str(at_limit.value)


def test_chance_is_one_over_the_classes_plus_two_points() -> None:
    assert at_chance(0.1 + 0.02) and not at_chance(0.121)
    assert at_chance(0.0) and at_chance(0.1)
    assert at_chance(0.5 + 0.02, num_classes=2) and not at_chance(0.53, num_classes=2)
    assert at_chance(0.3, num_classes=2)  # below chance counts as at it


def test_the_not_learning_warning_word_for_word() -> None:
    assert not_learning(rows(0.1, 0.11, loss=1.5), recipe("nin")) == (
        "nin is not learning: test accuracy has stayed at chance (0.10) for 2 epochs (0.1000, 0.1100); lower the "
        "learning rate (e.g. --lr 0.01) or use --recipe fast")
    assert not_learning(rows(0.1, 0.1, loss=2.3026), recipe("nin", "fast")) == (
        "nin is not learning: test accuracy has stayed at chance (0.10) for 2 epochs (0.1000, 0.1000); its training "
        "loss sits at ln 10 = 2.303, where the signal vanished at initialisation: try --init kaiming (He weights)")


def test_not_learning_needs_every_epoch_at_chance() -> None:
    config = recipe("nin")
    assert not_learning([], config) is None
    assert not_learning(rows(0.5, 0.1), config) is None
    assert not_learning(rows(0.1, 0.5), config) is None
    assert not_learning(rows(0.12), config) is not None


def test_not_learning_counts_chance_by_the_classes_of_the_data() -> None:
    two = [{"test_acc": 0.5, "train_loss": math.log(2)}, {"test_acc": 0.51, "train_loss": math.log(2)}]
    assert not_learning(two, recipe("lenet"), num_classes=2) == (
        "lenet is not learning: test accuracy has stayed at chance (0.50) for 2 epochs (0.5000, 0.5100); its "
        "training loss sits at ln 2 = 0.693, where the signal vanished at initialisation: try --init kaiming (He "
        "weights) or use --recipe fast")
    assert not_learning(two, recipe("lenet")) is None  # 0.5 is far above the chance of 10 classes


def test_a_loss_near_ln_10_but_not_at_it_or_he_weights_already_advise_a_lower_rate() -> None:
    lower = "lower the learning rate (e.g. --lr 0.01)"
    assert "sits at ln 10" in not_learning(rows(0.1, loss=math.log(10) + 0.019), recipe("nin"))
    assert "sits at ln 10" in not_learning(rows(0.1, loss=math.log(10) - 0.019), recipe("nin"))
    assert lower in not_learning(rows(0.1, loss=math.log(10) + 0.021), recipe("nin"))
    assert lower in not_learning(rows(0.1, loss=math.log(10) - 0.021), recipe("nin"))
    assert lower in not_learning(rows(0.1, loss=math.log(10)), recipe("nin", init="kaiming"))
    assert "sits at ln 10" in not_learning(rows(0.1, loss=math.log(10)), recipe("nin", init="default"))


def test_a_run_with_a_validation_split_is_warned_about_its_validation_accuracy() -> None:
    history = [{"val_acc": 0.1, "train_loss": 1.5}, {"val_acc": 0.1, "train_loss": 1.5}]
    assert not_learning(history, recipe("nin")).startswith(
        "nin is not learning: validation accuracy has stayed at chance (0.10) for 2 epochs (0.1000, 0.1000); ")
    fell = [{"val_acc": 0.8, "train_loss": 1.5}, {"val_acc": 0.1, "train_loss": 1.5}]
    assert fell_back(fell, recipe("nin")).startswith(
        "nin fell back to chance: validation accuracy 0.1000 in epoch 2, after 0.8000 in epoch 1; ")
    assert finished_at_chance(fell, recipe("nin")) == (
        "nin finished at chance: validation accuracy 0.1000 after 2 epochs; the model did not learn")


def test_the_fell_back_warning_word_for_word() -> None:
    assert fell_back(rows(0.6, 0.1), recipe("lenet")) == (
        "lenet fell back to chance: test accuracy 0.1000 in epoch 2, after 0.6000 in epoch 1; lower the learning "
        "rate (e.g. --lr 0.09) or use --recipe fast")
    # the best epoch is named, the first of equals
    assert "after 0.7000 in epoch 2;" in fell_back(rows(0.3, 0.7, 0.7, 0.05), recipe("lenet"))
    assert "after 0.7000 in epoch 1;" in fell_back(rows(0.7, 0.1, 0.7, 0.05), recipe("lenet"))


def test_fell_back_needs_an_earlier_epoch_above_chance_and_the_latest_at_it() -> None:
    config = recipe("lenet")
    assert fell_back([], config) is None and fell_back(rows(0.1), config) is None
    assert fell_back(rows(0.7, 0.12), config) is not None
    assert fell_back(rows(0.7, 0.13), config) is None
    assert fell_back(rows(0.1, 0.7, 0.1), config) is not None
    assert fell_back(rows(0.6, 0.6), config, num_classes=2) is None  # 0.6 is not chance for two classes
    assert fell_back(rows(0.6, 0.5), config, num_classes=2) is not None
    assert fell_back(rows(0.3, 0.5), config, num_classes=2) is None  # 0.3 is chance (and worse) for two classes
    two = [{"test_acc": 0.9, "train_loss": 0.2}, {"test_acc": 0.5, "train_loss": math.log(2)}]
    assert fell_back(two, config, num_classes=2).endswith("its training loss sits at ln 2 = 0.693, where the signal "
                                                          "vanished at initialisation: try --init kaiming (He weights) "
                                                          "or use --recipe fast")


def test_finished_at_chance_word_for_word() -> None:
    config = recipe("lenet")
    assert finished_at_chance(rows(0.8, 0.11), config) == (
        "lenet finished at chance: test accuracy 0.1100 after 2 epochs; the model did not learn")
    assert finished_at_chance(rows(0.11), config) == (
        "lenet finished at chance: test accuracy 0.1100 after 1 epoch; the model did not learn")
    assert finished_at_chance([], config) is None
    assert finished_at_chance(rows(0.115), config) is not None  # within 0.02 of a tenth
    assert finished_at_chance(rows(0.1, 0.13), config) is None
    assert finished_at_chance(rows(0.5), config, num_classes=2) is not None
