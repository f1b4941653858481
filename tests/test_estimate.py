"""What a run will cost before it starts: the plan of ``train --dry-run``, memory, time, the quicker options."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from convzoo.cli import build_parser
from convzoo.cli.train import train_arguments
from convzoo.config import recipe
from convzoo.estimate import (
    as_settings,
    format_seconds,
    memory_bytes,
    plan_run,
    run_seconds,
    shorter,
    smallest_input_size,
)
from convzoo.rundir import resolve_run
from convzoo.summary import summarize_model

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


def test_plan_counts_the_run_and_times_it() -> None:
    config = recipe("lenet", epochs=3, data_dir=str(SLICE), device="cpu", limit_train=1000, batch_size=128)
    plan = plan_run(config)
    summary = summarize_model("lenet")
    assert (plan.params, plan.macs) == (summary.total_params, summary.total_macs) == (61_706, 416_520)
    assert (plan.train_images, plan.test_images, plan.steps_per_epoch, plan.epochs) == (1000, 1000, 8, 3)
    assert plan.step_seconds > 0 and plan.eval_image_seconds > 0
    assert plan.seconds == pytest.approx(3 * (8 * plan.step_seconds + 1000 * plan.eval_image_seconds))
    assert plan_run(config, done_epochs=2, steps=1).epochs == 1
    text = plan.format()
    assert "parameters       61,706" in text and "MACs per image   416,520 at 28x28" in text
    assert "3 epoch(s) x 8 steps of 128 (1,000 images); 1,000 test images" in text and "time on cpu" in text
    assert json.loads(json.dumps(plan.to_json()))["config"]["limit_train"] == 1000


def test_memory_is_data_weights_with_optimizer_state_and_activations() -> None:
    # The input, then each layer's output: conv, sigmoid, pool, conv, sigmoid, pool, flatten, (linear, sigmoid) x 3.
    activations = 28 * 28 + 6 * 28 * 28 * 2 + 6 * 14 * 14 + 16 * 10 * 10 * 2 + 16 * 5 * 5 * 2 + 120 * 2 + 84 * 2 + 10
    plain = memory_bytes(recipe("lenet"), 60_000, 10_000)
    assert plain == {"data": 70_000 * 792, "weights": 61_706 * 4 * 2, "activations": activations * 256 * 4}
    adamw = memory_bytes(recipe("lenet", optimizer="adamw", amp=True), 60_000, 10_000)
    assert adamw["weights"] == 61_706 * 4 * 4 and adamw["activations"] == activations * 256 * 2
    assert memory_bytes(recipe("lenet", "fast"), 1, 1)["weights"] == 61_706 * 4 * 3  # momentum


def test_the_flags_of_a_config_give_it_back() -> None:
    config = recipe("alexnet", "fast", epochs=3, limit_train=5000, augment=False, device="cpu")
    args = build_parser().parse_args(["train", "alexnet", *" ".join(as_settings(config)).split()])
    assert resolve_run(**train_arguments(args))[0] == config


def test_quicker_options_fit_the_run() -> None:
    book = shorter(recipe("alexnet", device="cpu"))
    assert book == ("--limit-train 10000, --limit-test 2000, --input-size 112, --recipe fast, --epochs 2, "
                    "a GPU (--device cuda)")
    quick = shorter(recipe("alexnet", "fast", epochs=2, resize=67, limit_train=5000, limit_test=1000, device="cpu"))
    assert quick == "a GPU (--device cuda)"  # 67 is as small as AlexNet goes
    assert [smallest_input_size(name) for name in ("alexnet", "lenet", "resnet18")] == [65, 12, 1]
    assert run_seconds(recipe("lenet", batch_size=100), 2, 10, 300, 0.3) == pytest.approx(2 * (10 * 0.3 + 300 * 0.001))
    assert run_seconds(recipe("lenet", batch_size=100, tta=True), 1, 0, 300, 0.3) == pytest.approx(0.6)


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (42, "42 s"), (200, "3 min 20 s"), (7500, "2 h 05 min")])
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_dry_run_prints_the_plan_and_creates_nothing(tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
                                                     ) -> None:
    out = tmp_path / "run"
    args = ["train", "lenet", "--epochs", "2", "--limit-train", "256", "--data-dir", str(SLICE), "--device", "cpu",
            "--out", str(out), "--dry-run"]
    code, text, err = run_cli(*args)
    assert (code, err) == (0, "") and not out.exists()
    assert text.startswith("lenet with the d2l recipe, resolved (nothing was created):\n  --recipe d2l --epochs 2 ")
    assert "--lr 0.9" in text and "--no-augment" in text and f"run directory: {out} (not created)" in text
    code, text, err = run_cli(*args, "--json")
    plan = json.loads(text)
    assert (code, plan["run_dir"], plan["train_images"], plan["config"]["lr"]) == (0, str(out), 256, 0.9)
    assert set(plan["memory"]) == {"data", "weights", "activations"} and not out.exists()
