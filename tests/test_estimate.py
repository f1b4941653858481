"""What a run will cost before it starts: the plan of ``train --dry-run``, memory, time, the quicker options."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from convzoo.cli import build_parser
from convzoo.cli.train import train_arguments
from convzoo.config import TrainConfig, recipe
from convzoo.estimate import (
    Plan,
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
from convzoo.terms import PYTHON, speaking

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


# --- the plan as users read it, word for word (issue 26) ---------------------------------------------------------
MIB = 2**20


def a_plan(config: TrainConfig, **changes: object) -> Plan:
    """A plan with round numbers (nothing timed): 3 epochs of 8 steps, 1,000 images, 6 MiB, 6 min 40 s."""
    values = {"config": config, "device": "cpu", "device_name": "CPU (2 threads)", "params": 61_706, "macs": 416_520,
              "train_images": 1000, "test_images": 1000, "steps_per_epoch": 8, "epochs": 3,
              "memory": {"data": 3 * MIB, "weights": MIB // 2, "activations": 5 * MIB // 2}, "step_seconds": 0.25,
              "eval_image_seconds": 0.00045, "seconds": 400.0, "threads": "2 threads (the cores)"}
    return Plan(**{**values, **changes})  # type: ignore[arg-type]


LENET = recipe("lenet", epochs=3, device="cpu", limit_train=1000, batch_size=128)


def test_the_plan_word_for_word() -> None:
    assert a_plan(LENET).format() == "\n".join([
        "lenet with the d2l recipe, resolved (nothing was created):",
        "  --recipe d2l --epochs 3 --batch-size 128 --lr 0.9 --optimizer sgd --momentum 0 --weight-decay 0",
        "  --schedule constant --label-smoothing 0 --no-augment --no-tta --init xavier --input-size 28 --seed 0",
        "  --device cpu --backend torch --channels-last --no-amp --no-compile --autotune --limit-train 1000",
        "  --no-grayscale --test-fraction 0.2 --val-fraction 0 --eval-batch-size 1000 --no-deterministic",
        "parameters       61,706",
        "MACs per image   416,520 at 28x28 (FLOPs = 2 x MACs)",
        "training         3 epoch(s) x 8 steps of 128 (1,000 images); 1,000 test images scored after each epoch",
        "memory on cpu    about 6 MiB: data 3.0, weights with gradients and optimizer state 0.5, activations of a "
        "batch 2.5",
        "time on cpu      about 6 min 40 s (250.0 ms a training step, 0.45 ms to score a test image; measured on CPU "
        "(2 threads))",
        "timed with 2 threads (the cores)",
        "quicker: --limit-test 2000, --recipe fast, --epochs 2, a GPU (--device cuda)",
    ])
    assert str(a_plan(LENET)) == a_plan(LENET).format()


def test_a_plan_made_in_python_reads_as_the_call_that_gives_it() -> None:
    with speaking(PYTHON):
        plan = a_plan(LENET, train_images=900, val_images=100, seconds=100.0, threads="2 threads")
    assert plan.format() == "\n".join([
        "lenet with the d2l recipe, resolved (nothing was created):",
        "  recipe='d2l', epochs=3, batch_size=128, lr=0.9, optimizer='sgd', momentum=0, weight_decay=0,",
        "  schedule='constant', label_smoothing=0, augment=False, tta=False, init='xavier', input_size=28,",
        "  seed=0, device='cpu', backend='torch', channels_last=True, amp=False, compile=False, autotune=True,",
        "  limit_train=1000, grayscale=False, test_fraction=0.2, val_fraction=0, eval_batch_size=1000,",
        "  deterministic=False",
        "parameters       61,706",
        "MACs per image   416,520 at 28x28 (FLOPs = 2 x MACs)",
        "training         3 epoch(s) x 8 steps of 128 (900 images); 100 validation images scored after each epoch, "
        "1,000 test images once at the end",
        "memory on cpu    about 6 MiB: data 3.0, weights with gradients and optimizer state 0.5, activations of a "
        "batch 2.5",
        "time on cpu      about 1 min 40 s (250.0 ms a training step, 0.45 ms to score a test image; measured on CPU "
        "(2 threads))",
        "timed with 2 threads",
    ])
    stored = plan.to_json()
    assert set(stored) == {"config", "device", "device_name", "params", "macs", "train_images", "test_images",
                           "steps_per_epoch", "epochs", "memory", "step_seconds", "eval_image_seconds", "seconds",
                           "run_dir", "threads", "val_images"}  # not the door: the words, not the plan
    assert stored["val_images"] == 100 and stored["config"] == asdict(LENET)


def test_a_plan_on_a_gpu_leaves_out_the_threads_and_a_short_run_the_quicker_options() -> None:
    lines = a_plan(LENET, device="cuda:0", device_name="NVIDIA H100", seconds=300.0).format().splitlines()
    assert lines[-2] == ("memory on cuda:0 about 6 MiB: data 3.0, weights with gradients and optimizer state 0.5, "
                         "activations of a batch 2.5")
    assert lines[-1] == ("time on cuda:0   about 5 min 00 s (250.0 ms a training step, 0.45 ms to score a test image; "
                         "measured on NVIDIA H100)")
    assert a_plan(LENET, threads="").format().splitlines()[-2].startswith("time on cpu ")
    assert a_plan(LENET, seconds=301.0).format().splitlines()[-1].startswith("quicker: ")


def test_a_plan_with_nothing_quicker_to_offer_says_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("convzoo.estimate.shorter", lambda config: "")
    assert a_plan(LENET, seconds=1e6).format().splitlines()[-1] == "timed with 2 threads (the cores)"


def test_the_settings_of_a_plan_leave_out_what_is_not_set() -> None:
    assert as_settings(recipe("lenet"))[:3] == ["--recipe d2l", "--epochs 10", "--batch-size 256"]
    assert not any(item.startswith(("--limit-test", "--data ", "--threads", "--cuda-graphs"))
                   for item in as_settings(recipe("lenet")))
    assert "--cuda-graphs" in as_settings(recipe("lenet", cuda_graphs=True))
    with speaking(PYTHON):
        assert as_settings(recipe("lenet", "fast"))[:2] == ["recipe='fast'", "epochs=10"]


@pytest.mark.parametrize(("seconds", "text"), [(-5, "0 s"), (59.4, "59 s"), (59.6, "1 min 00 s"), (60, "1 min 00 s"),
                                               (61, "1 min 01 s"), (3599, "59 min 59 s"), (3600, "1 h 00 min"),
                                               (3659, "1 h 00 min"), (3660, "1 h 01 min"), (90061, "25 h 01 min")])
def test_format_seconds_at_each_unit(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_the_time_of_a_run_is_its_steps_and_its_scoring() -> None:
    # measured: 3 epochs x (8 steps of 0.5 s + 1,000 images x 2 ms)
    assert run_seconds(recipe("lenet"), 3, 8, 1000, 0.5, 0.002) == pytest.approx(3 * (4 + 2))
    # not measured: scoring an image is a third of training on it, 0.3 s / 100 images / 3 = 1 ms
    assert run_seconds(recipe("lenet", batch_size=100), 1, 0, 1000, 0.3) == pytest.approx(1.0)
    assert run_seconds(recipe("lenet", batch_size=100), 0, 8, 1000, 0.3) == 0


def test_the_quicker_options_at_their_bounds() -> None:
    at = shorter(recipe("lenet", "fast", epochs=2, limit_train=10_000, limit_test=2_000, device="cpu"))
    assert at == "a GPU (--device cuda)"  # 28x28: 32 is no smaller
    past = shorter(recipe("lenet", "fast", epochs=3, limit_train=10_001, limit_test=2_001, device="cpu"))
    assert past == "--limit-train 10000, --limit-test 2000, --epochs 2, a GPU (--device cuda)"
    # half the side, never below 32 nor the network's smallest: offered when it saves a quarter of the side
    assert shorter(recipe("resnet18", "fast", epochs=1, limit_train=1, limit_test=1, resize=64, device="cpu")) == \
        "--input-size 32, a GPU (--device cuda)"
    assert shorter(recipe("resnet18", "fast", epochs=1, limit_train=1, limit_test=1, resize=43, device="cpu")) == \
        "--input-size 32, a GPU (--device cuda)"  # 32 is three quarters of 43, rounded down
    assert shorter(recipe("resnet18", "fast", epochs=1, limit_train=1, limit_test=1, resize=42, device="cpu")) == \
        "a GPU (--device cuda)"  # 32 is more than three quarters of 42 (31): not worth saying
    assert shorter(recipe("resnet18", "fast", epochs=1, limit_train=1, limit_test=1, resize=100, device="cpu")) == \
        "--input-size 50, a GPU (--device cuda)"
    with speaking(PYTHON):
        assert shorter(recipe("lenet", epochs=3, device="cpu")) == ("limit_train=10000, limit_test=2000, "
                                                                    "recipe='fast', epochs=2, a GPU (device='cuda')")


def test_the_smallest_input_of_each_network() -> None:
    # LeNet: 5x5 pad 2, pool 2, 5x5, pool 2: a side of 12 leaves 1 pixel; AlexNet's 11x11/4 and three 3x3/2 pools: 65
    assert {name: smallest_input_size(name) for name in ("lenet", "lenet_bn", "alexnet")} == \
        {"lenet": 12, "lenet_bn": 16, "alexnet": 65}


def test_a_plan_with_a_validation_split_counts_it_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("convzoo.estimate.time_step", lambda config, model, device, steps: (0.5, 0.002))
    config = recipe("lenet", epochs=2, data_dir=str(SLICE), device="cpu", batch_size=100, val_fraction=0.1,
                    limit_test=500, threads=1)
    plan = plan_run(config)
    assert plan.threads == "threads: 1 (--threads)" and plan.device_name.endswith(" (1 threads)")
    # 2,000 training images, a tenth of each class held out (201, rounded class by class)
    assert (plan.train_images, plan.val_images, plan.test_images, plan.steps_per_epoch) == (1799, 201, 500, 18)
    assert (plan.step_seconds, plan.eval_image_seconds) == (0.5, 0.002)
    # 2 epochs x (18 steps of 0.5 s + 201 validation images x 2 ms), then 500 test images x 2 ms once
    assert plan.seconds == pytest.approx(2 * (9 + 0.402) + 1.0)
    assert plan.memory == memory_bytes(config, 2000, 500)
    assert (plan.params, plan.macs, plan.epochs, plan.device, plan.run_dir) == (61_706, 416_520, 2, "cpu", None)
    done = plan_run(config, done_epochs=2)
    assert (done.epochs, done.seconds) == (0, 0)  # nothing left to train: not even the test set is scored
    more = plan_run(config, done_epochs=5, run_dir=tmp_path / "r")
    assert (more.epochs, more.run_dir) == (0, str(tmp_path / "r"))
    assert plan_run(config, done_epochs=1).seconds == pytest.approx(9.402 + 1.0)
    whole = plan_run(replace(config, val_fraction=0.0))  # every epoch scored on the test set, none held out
    assert (whole.train_images, whole.val_images, whole.steps_per_epoch) == (2000, 0, 20)
    assert whole.seconds == pytest.approx(2 * (10 + 1.0))


class Clock:
    """``time.perf_counter`` that moves only when a step or a scoring pass runs (``tick``)."""

    def __init__(self) -> None:
        self.now = 64.0  # times in binary fractions: exact sums

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def timed(monkeypatch: pytest.MonkeyPatch, step_seconds: float, config: TrainConfig, steps: int | None = None,
          in_channels: int = 1, num_classes: int = 10, model: nn.Module | None = None
          ) -> tuple[tuple[float, float], list, list]:
    """``time_step`` with a step that takes ``step_seconds`` and a scoring pass 0.125 s: the result, the training
    batches (x, y) the steps were given and the batches scored."""
    import convzoo.estimate as estimate
    from convzoo.models import create_model

    clock, stepped, scored = Clock(), [], []

    class Step:
        def __init__(self, model, loss, optimizer, device, amp) -> None:  # noqa: ANN001
            assert (loss.label_smoothing, amp) == (config.label_smoothing, config.amp)

        def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
            stepped.append((x, y))
            clock.tick(step_seconds)

    def score(model, batch, amp, tta) -> None:  # noqa: ANN001
        assert (amp, tta) == (config.amp, config.tta) and not model.training
        scored.append(batch)
        clock.tick(0.125)

    monkeypatch.setattr(estimate.time, "perf_counter", clock)
    monkeypatch.setattr(estimate, "TrainStep", Step)
    monkeypatch.setattr(estimate, "scores", score)
    model = model or create_model("lenet", in_channels=in_channels, num_classes=num_classes)
    given = {} if steps is None else {"steps": steps}  # 3 timed steps unless told
    return estimate.time_step(config, model, torch.device("cpu"), **given), stepped, scored


def test_a_quick_step_is_warmed_up_once_then_timed_up_to_steps_times(monkeypatch: pytest.MonkeyPatch) -> None:
    config = recipe("lenet", batch_size=8, eval_batch_size=1000)
    (step_seconds, image_seconds), stepped, scored = timed(monkeypatch, 0.5, config)
    assert len(stepped) == 1 + 3 and step_seconds == 0.5
    assert len(scored) == 2 and len(scored[0]) == 8  # a warm-up and a timed pass over the batch
    assert image_seconds == 0.125 / 8
    x, y = stepped[0]
    assert x.shape == (8, 1, 28, 28) and x.is_contiguous(memory_format=torch.channels_last)
    assert y.shape == (8,) and y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < 10
    assert 0 <= float(x.min()) and float(x.max()) < 1


def test_steps_stop_being_timed_after_2_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    config = recipe("lenet", batch_size=4)
    (step_seconds, _), stepped, _ = timed(monkeypatch, 0.875, config, steps=5)
    assert len(stepped) == 1 + 3 and step_seconds == 0.875  # 0.875, 1.75, then 2.625 s: past 2 s
    (step_seconds, _), stepped, _ = timed(monkeypatch, 1.0, config, steps=5)
    assert len(stepped) == 1 + 2 and step_seconds == 1.0  # 2.0 s is not under 2 s


def test_a_first_step_of_2_seconds_or_more_is_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    config = recipe("lenet", batch_size=4)
    (step_seconds, _), stepped, _ = timed(monkeypatch, 2.0, config)
    assert (len(stepped), step_seconds) == (1, 2.0)
    (step_seconds, _), stepped, _ = timed(monkeypatch, 1.875, config, steps=1)
    assert (len(stepped), step_seconds) == (2, 1.875)


def test_scoring_is_timed_on_at_most_64_images_of_the_evaluation_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    config = recipe("lenet", batch_size=100, eval_batch_size=1000, amp=True, tta=True, label_smoothing=0.1,
                    channels_last=False)
    (_, image_seconds), stepped, scored = timed(monkeypatch, 0.1, config)
    assert [len(b) for b in scored] == [64, 64] and image_seconds == 0.125 / 64
    assert stepped[0][0].is_contiguous()
    (_, image_seconds), _, scored = timed(monkeypatch, 0.1, recipe("lenet", batch_size=100, eval_batch_size=10))
    assert [len(b) for b in scored] == [10, 10] and image_seconds == 0.125 / 10


def test_the_steps_take_the_images_and_classes_of_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    _, stepped, _ = timed(monkeypatch, 0.1, recipe("lenet", batch_size=300, input_size=32), in_channels=3,
                          num_classes=2)
    x, y = stepped[0]
    assert x.shape == (300, 3, 32, 32) and set(y.tolist()) == {0, 1}


def test_a_network_that_takes_no_smaller_input_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo.models import InputSizeError

    def never(network, size):  # noqa: ANN001, ANN202
        raise InputSizeError("too small")

    monkeypatch.setattr("convzoo.estimate.feature_size", never)
    assert smallest_input_size("lenet") == 28

    def from_27(network, size):  # noqa: ANN001, ANN202
        if size < 27:
            raise InputSizeError("too small")

    monkeypatch.setattr("convzoo.estimate.feature_size", from_27)
    assert smallest_input_size("lenet") == 27  # the sides up to the network's own are tried


def test_the_plan_builds_the_runs_network_on_its_device_with_the_threads_it_chose(monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    import convzoo.estimate as estimate

    built, build_model = [], estimate.build_model

    def build(config, device, *, num_classes=None, in_channels=None):  # noqa: ANN001, ANN202
        built.append((device, num_classes, in_channels))
        return build_model(config, device, num_classes=num_classes, in_channels=in_channels)

    monkeypatch.setattr(estimate, "build_model", build)
    monkeypatch.setattr(estimate, "thread_choice", lambda config: (3, "threads: 3 (chosen here)"))
    timed_steps = []

    def time_step(config, model, device, steps):  # noqa: ANN001, ANN202
        timed_steps.append(steps)
        return 0.5, 0.002

    monkeypatch.setattr(estimate, "time_step", time_step)
    plan = plan_run(recipe("lenet", data_dir=str(SLICE), device="cpu", limit_train=100, limit_test=100))
    assert built == [(torch.device("cpu"), 10, 1)] and timed_steps == [3]
    assert plan.threads == "threads: 3 (chosen here)" and plan.device_name.endswith(" (3 threads)")


def test_a_gpu_step_is_timed_to_its_end_and_a_cpu_step_needs_no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo.estimate import _synchronize

    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", waited.append)
    _synchronize(torch.device("cpu"))
    _synchronize(torch.device("cuda", 1))
    assert waited == [torch.device("cuda", 1)]


def test_a_network_from_outside_the_zoo_is_timed_on_gray_images_of_10_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    _, stepped, _ = timed(monkeypatch, 0.1, recipe("lenet", batch_size=500), model=net)
    x, y = stepped[0]
    assert x.shape == (500, 1, 28, 28) and set(y.tolist()) == set(range(10))
