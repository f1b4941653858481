"""The one comparison every from-scratch op test goes through (micrograd's habit)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import Phase, settings

# Mutation runs (tools/mutation.py sets HYPOTHESIS_PROFILE=mutation) stop at the first failing example:
# shrinking it to a smaller one would only cost time, once per killed mutant.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"  # real images: 2000 train, 1000 test

TOL = 1e-10


def _assert_matches_torch(ours: Callable, theirs: Callable, *tensors: torch.Tensor | None, **kwargs) -> None:
    """Run ``ours`` and ``theirs`` on float64 copies of ``tensors``; compare values, then gradients.

    Both sides get the same upstream gradient (random, so that a gradient routed to the wrong
    element cannot hide behind a sum of ones) and must agree on the gradient of every floating
    tensor argument. ``None`` stands for an absent argument (no bias) and is passed through.
    """
    def leaves() -> list[torch.Tensor | None]:
        return [None if t is None else t.detach().to(torch.float64).clone().requires_grad_() for t in tensors]

    ours_in, theirs_in = leaves(), leaves()
    ours_out, theirs_out = ours(*ours_in, **kwargs), theirs(*theirs_in, **kwargs)
    assert ours_out.dtype == theirs_out.dtype == torch.float64
    torch.testing.assert_close(ours_out, theirs_out, rtol=TOL, atol=TOL)

    upstream = torch.randn_like(theirs_out)
    ours_in = [t for t in ours_in if t is not None]
    theirs_in = [t for t in theirs_in if t is not None]
    ours_grads = torch.autograd.grad(ours_out, ours_in, upstream, allow_unused=True)
    theirs_grads = torch.autograd.grad(theirs_out, theirs_in, upstream, allow_unused=True)
    for i, (ours_grad, theirs_grad) in enumerate(zip(ours_grads, theirs_grads, strict=True)):
        # An input the output does not depend on has no gradient on either side, or zeros.
        ours_grad = torch.zeros_like(ours_in[i]) if ours_grad is None else ours_grad
        theirs_grad = torch.zeros_like(theirs_in[i]) if theirs_grad is None else theirs_grad
        message = lambda m, i=i: f"gradient of argument {i}: {m}"  # noqa: E731
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=TOL, atol=TOL, msg=message)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's raw data copies (``convzoo.data.raw_cache_dir``) go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(scope="session")
def assert_matches_torch() -> Callable[..., None]:
    """The helper as a fixture: session-scoped, so hypothesis tests may take it too."""
    return _assert_matches_torch


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny LeNet run on the committed slice of the real data, per test module."""
    from convzoo.train import fit, recipe

    out = tmp_path_factory.mktemp("runs") / "lenet"
    config = recipe("lenet", optimizer="adamw", lr=0.005, batch_size=32, epochs=1, data_dir=str(SLICE),
                    device="cpu", limit_train=512, limit_test=200)
    fit(config, out, log=lambda _: None, progress=False)
    return out


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: the test machines share two cores between several pytest runs, and
    PyTorch's spinning worker threads slow down many-fold when their core is taken."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``convzoo ARGS`` in this process; returns ``(exit status, stdout, stderr)``."""
    from convzoo import cli

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
