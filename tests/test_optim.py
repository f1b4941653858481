"""The optimizer and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from convzoo.config import TrainConfig
from convzoo.optim import lr_factor, make_optimizer


def test_lr_schedules() -> None:
    assert lr_factor("constant", 50, 100) == 1.0
    cosine = [lr_factor("cosine", s, 100) for s in range(101)]
    assert cosine[0] == 1.0 and math.isclose(cosine[-1], 0.0, abs_tol=1e-12)
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))
    one = [lr_factor("onecycle", s, 100) for s in range(101)]
    peak = one.index(max(one))
    assert one[0] == pytest.approx(0.1) and max(one) == pytest.approx(1.0) and 20 <= peak <= 30
    assert all(a <= b for a, b in zip(one[:peak], one[1:peak + 1]))
    assert all(a >= b for a, b in zip(one[peak:], one[peak + 1:])) and one[-1] == pytest.approx(0.0, abs=1e-12)


# The factors of a short run written out from the schedules' definitions (step s of T, progress p = s / T):
# cosine (1 + cos(pi p)) / 2; one-cycle 0.1 + 0.9 p / 0.25 while p < 1/4, then (1 + cos(pi (p - 1/4) / (3/4))) / 2.
R3 = math.sqrt(3)
EXPECTED = {
    ("cosine", 8): [(1 + math.cos(math.pi * s / 8)) / 2 for s in range(9)],
    # cos(pi s / 9) for s = 0..9; cos(60 deg) = 1/2 and cos(120 deg) = -1/2 written out
    ("cosine", 9): [1.0, (1 + math.cos(math.pi / 9)) / 2, (1 + math.cos(2 * math.pi / 9)) / 2, 0.75,
                    (1 + math.cos(4 * math.pi / 9)) / 2, (1 + math.cos(5 * math.pi / 9)) / 2, 0.25,
                    (1 + math.cos(7 * math.pi / 9)) / 2, (1 + math.cos(8 * math.pi / 9)) / 2, 0.0],
    # T = 8: p = 0, 1/8 warm up (0.1, 0.55); from p = 1/4 the cosine over (p - 1/4) * 4/3 = 0, 1/6, ... 1,
    # i.e. angles 0, 30, 60, 90, 120, 150, 180 degrees
    ("onecycle", 8): [0.1, 0.55, 1.0, (1 + R3 / 2) / 2, 0.75, 0.5, 0.25, (1 - R3 / 2) / 2, 0.0],
    # T = 9: p = 0, 1/9, 2/9 warm up (0.1, 0.1 + 0.4, 0.1 + 0.8); then (p - 1/4) * 4/3 = (4 s - 9) / 27
    ("onecycle", 9): [0.1, 0.5, 0.9] + [(1 + math.cos(math.pi * (4 * s - 9) / 27)) / 2 for s in range(3, 10)],
}


@pytest.mark.parametrize("schedule, total", list(EXPECTED))
def test_every_step_of_a_short_run_has_the_schedules_factor(schedule: str, total: int) -> None:
    got = [lr_factor(schedule, s, total) for s in range(total + 1)]
    assert got == pytest.approx(EXPECTED[schedule, total], rel=1e-12, abs=1e-12)
    assert got[0] == (1.0 if schedule == "cosine" else 0.1)  # the first step: exactly the start
    # a schedule shifted by a step is told apart at every step but where it is flat
    shifted = [lr_factor(schedule, s + 1, total) for s in range(total)]
    assert sum(a != pytest.approx(b, abs=1e-9) for a, b in zip(shifted, EXPECTED[schedule, total])) >= total - 1


def test_the_constant_schedule_is_one_at_every_step() -> None:
    assert [lr_factor("constant", s, 8) for s in (0, 1, 7, 8, 20)] == [1.0] * 5
    assert lr_factor("constant", 0, 0) == 1.0


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_schedule_ends_at_zero_and_stays_there(schedule: str) -> None:
    assert lr_factor(schedule, 8, 8) == pytest.approx(0.0, abs=1e-15)
    assert [lr_factor(schedule, s, 8) for s in (9, 16, 100)] == [lr_factor(schedule, 8, 8)] * 3  # past the end
    # a one-step run: its only step starts the schedule, its end is the end
    assert lr_factor(schedule, 0, 1) == (1.0 if schedule == "cosine" else 0.1)
    assert lr_factor(schedule, 1, 1) == pytest.approx(0.0, abs=1e-15)
    # no steps at all (an empty run): no division by zero, the schedule's start
    assert lr_factor(schedule, 0, 0) == (1.0 if schedule == "cosine" else 0.1)
    assert lr_factor(schedule, 1, 0) == pytest.approx(0.0, abs=1e-15)


def test_one_cycle_warms_up_for_the_first_quarter_of_the_run() -> None:
    """T = 100: linear from 0.1 at step 0 to 1 at step 25 (0.1 + 0.9 s / 25), the peak; then down."""
    assert [lr_factor("onecycle", s, 100) for s in range(26)] == pytest.approx([0.1 + 0.036 * s for s in range(26)])
    assert lr_factor("onecycle", 25, 100) == 1.0
    assert lr_factor("onecycle", 26, 100) == pytest.approx((1 + math.cos(math.pi / 75)) / 2)
    assert lr_factor("onecycle", 625, 1000) == pytest.approx(0.5)  # halfway down: 90 degrees


def _config(**values: object) -> TrainConfig:
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_sgd_takes_the_runs_rate_momentum_and_weight_decay() -> None:
    model = nn.Linear(3, 2)
    optimizer = make_optimizer(model, _config(lr=0.3, momentum=0.9, weight_decay=5e-4))
    assert type(optimizer) is torch.optim.SGD
    (group,) = optimizer.param_groups
    assert group["params"] == list(model.parameters())
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.3, 0.9, 5e-4, True)
    assert type(group["lr"]) is float
    assert not group["fused"]  # the fused kernels are CUDA's (this one is the CPU's default: None)


def test_sgd_without_momentum_is_plain_sgd() -> None:
    optimizer = make_optimizer(nn.Linear(3, 2), _config(lr=0.1, momentum=0.0, weight_decay=0.0))
    (group,) = optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.1, 0.0, 0.0, False)


def test_adamw_takes_the_runs_rate_and_weight_decay() -> None:
    model = nn.Linear(3, 2)
    optimizer = make_optimizer(model, _config(optimizer="adamw", lr=1e-3, momentum=0.9, weight_decay=0.05),
                               device=torch.device("cpu"), graphable=True)
    assert type(optimizer) is torch.optim.AdamW
    (group,) = optimizer.param_groups
    assert group["params"] == list(model.parameters())
    assert (group["lr"], group["weight_decay"], group["betas"]) == (1e-3, 0.05, (0.9, 0.999))
    assert type(group["lr"]) is float and not group["fused"] and not group["capturable"]  # graphable: CUDA only


def test_the_sgd_step_is_nesterovs_with_decoupled_rate_and_coupled_decay() -> None:
    """Two steps of w <- w - lr (g + wd w + m b) with b <- m b + g + wd w, by hand, on one weight."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    optimizer = make_optimizer(model, _config(lr=0.5, momentum=0.5, weight_decay=0.25))
    w, b = 2.0, 0.0
    for _ in range(2):
        optimizer.zero_grad()
        (model.weight.sum() * 3).backward()  # gradient 3
        optimizer.step()
        g = 3 + 0.25 * w
        b = 0.5 * b + g
        w -= 0.5 * (g + 0.5 * b)
    assert model.weight.item() == pytest.approx(w, rel=1e-6)


@pytest.mark.parametrize("name, graphable", [("sgd", None), ("sgd", True), ("adamw", None), ("adamw", True),
                                             ("adamw", False)])
def test_on_cuda_the_update_is_fused_and_graphable_rates_are_device_tensors(
    name: str, graphable: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``make_optimizer`` asks torch for on CUDA, checked with CPU parameters (torch fuses on the CPU too):
    the fused update; with ``graphable`` the rate as a tensor on the device (made here on the CPU, since there
    may be no GPU) and, for AdamW, the capturable state a CUDA graph needs."""
    made = []
    tensor = torch.tensor

    def on_the_cpu(data: object, *, device: torch.device) -> torch.Tensor:
        made.append(device)
        return tensor(data)

    monkeypatch.setattr(torch, "tensor", on_the_cpu)
    cuda = torch.device("cuda")
    config = _config(optimizer=name, lr=0.25, momentum=0.9, weight_decay=0.02)
    if graphable is None:  # not graphable by default
        optimizer, graphable = make_optimizer(nn.Linear(3, 2), config, device=cuda), False
    else:
        optimizer = make_optimizer(nn.Linear(3, 2), config, device=cuda, graphable=graphable)
    monkeypatch.undo()
    (group,) = optimizer.param_groups
    assert group["fused"] is True
    assert made == ([cuda] if graphable else [])
    assert torch.is_tensor(group["lr"]) == graphable and float(group["lr"]) == 0.25
    if name == "adamw":
        assert type(optimizer) is torch.optim.AdamW and group["capturable"] is graphable
    else:
        assert type(optimizer) is torch.optim.SGD and (group["momentum"], group["nesterov"]) == (0.9, True)
        assert "capturable" not in group
    assert group["weight_decay"] == 0.02
