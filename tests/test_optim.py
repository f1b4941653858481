"""The optimizer and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest

from convzoo.optim import lr_factor


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
