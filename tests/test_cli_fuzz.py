"""The command line driven with random flag values: every run ends in exit 0, 2 or 3, never a traceback.

A failed run leaves no run directory behind, unless it diverged after completing an epoch (exit 3),
when the directory keeps that epoch's checkpoint to resume from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convzoo import checkpoint

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"

HUGE = 10 ** 30
integers = st.sampled_from([-1, 0, 1, 2, 3, 33, 2 ** 31 + 1, 2 ** 63, HUGE])
numbers = st.sampled_from(["nan", "inf", "-inf", "-0.5", "0", "1e-30", "0.05", "0.9", "1.5", "100", "1e39", "1e300"])
FLAGS = {
    "--epochs": st.sampled_from([-1, 0, 1, 2, 2 ** 40]),
    "--batch-size": integers,
    "--eval-batch-size": integers,
    "--lr": numbers,
    "--momentum": numbers,
    "--weight-decay": numbers,
    "--label-smoothing": numbers,
    "--resize": st.sampled_from([-3, 0, 1, 2, 7, 28, 32, 100000, HUGE]),
    "--seed": st.sampled_from([-5, 0, 7, 2 ** 62, 2 ** 70]),
    "--limit-train": st.sampled_from([-1, 0, 1, 2, 3, 40, HUGE]),
    "--limit-test": st.sampled_from([-1, 0, 1, 2, 16, HUGE]),
    "--threads": st.sampled_from([-1, 0, 1, 2, 10 ** 6]),
    "--schedule": st.sampled_from(["constant", "onecycle", "cosine", "sawtooth"]),
    "--optimizer": st.sampled_from(["sgd", "adamw"]),
    "--init": st.sampled_from(["xavier", "kaiming", "default"]),
}
SWITCHES = ["--augment", "--tta", "--amp", "--no-channels-last", "--deterministic"]


@st.composite
def train_commands(draw: st.DrawFn) -> list[str]:
    argv = ["train", draw(st.sampled_from(["lenet", "lenet_bn", "lenet_modern", "alexnet", "nin"]))]
    argv += ["--recipe", draw(st.sampled_from(["d2l", "fast"]))]
    chosen = draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=5, unique=True))
    # Small by default, so that the runs that start finish in a second.
    values = {"--epochs": 1, "--limit-train": 40, "--limit-test": 16, "--resize": 28, "--batch-size": 16}
    values.update({flag: draw(FLAGS[flag]) for flag in chosen})
    for flag, value in values.items():
        argv += [flag, str(value)]
    argv += draw(st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
    return argv + ["--data-dir", str(SLICE), "--device", "cpu"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=train_commands())
def test_any_train_command_ends_in_0_2_or_3_and_a_failure_leaves_no_run_directory(
        argv: list[str], tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    out = tmp_path / f"run{abs(hash(tuple(argv)))}"
    code, _, err = run_cli(*argv, "--out", str(out))
    assert code in (0, 2, 3), err
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert not out.exists(), f"{argv} failed but left {sorted(p.name for p in out.iterdir())}"
    elif code == 3:
        assert not out.exists() or checkpoint.saved_epoch(out / "checkpoint.safetensors"), argv
    else:
        assert (out / "model.safetensors").is_file()
