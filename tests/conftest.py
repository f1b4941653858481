"""The one comparison every from-scratch op test goes through (micrograd's habit)."""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile
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
ROOT = Path(__file__).resolve().parents[1]

# The suite's own home, set before any test module imports matplotlib (whose font cache goes to
# $MPLCONFIGDIR or ~/.cache) or starts a browser (~/.config/chromium): no test writes to the user's
# home directory. Subprocesses inherit it. Removed when the session's process exits (a forked
# child of a mutation run leaves it to its parent).
_PRIVATE = Path(tempfile.mkdtemp(prefix="convzoo-tests-"))
atexit.register(shutil.rmtree, _PRIVATE, ignore_errors=True)
for _variable, _folder in (("HOME", "home"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"),
                           ("XDG_DATA_HOME", "share"), ("MPLCONFIGDIR", "matplotlib")):
    (_PRIVATE / _folder).mkdir()
    os.environ[_variable] = str(_PRIVATE / _folder)
# Directories the suite's own tools write in the repository (caches); anything else new there is a test's doing.
_TOOL_DIRECTORIES = frozenset({".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
                               "mutants"})

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


def repository_files(root: Path = ROOT) -> set[str]:
    """Every file and directory under ``root`` (links not followed), except the tools' caches."""
    found: set[str] = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in _TOOL_DIRECTORIES and not d.endswith(".egg-info")]
        where = Path(folder).relative_to(root)
        found.update(str(where / name) for name in [*subfolders, *files])
    return found


@pytest.fixture(scope="session", autouse=True)
def machine_untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The whole session runs in a temporary directory; at its end the repository has no new file
    and ``/dev/null`` is still the character device (a test that wrote outside its temporary
    directories fails the session here, naming what it left)."""
    before = repository_files()
    null_was_device = stat.S_ISCHR(os.stat(os.devnull).st_mode)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("session-cwd"))
        yield
    new = sorted(repository_files() - before)
    assert not new, f"the tests left new files in the repository {ROOT}: {new[:20]}"
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode) or not null_was_device, \
        f"{os.devnull} is no longer a character device: a test replaced it"


@pytest.fixture(autouse=True)
def own_cwd(machine_untouched: None) -> Iterator[Path]:
    """Each test runs in an empty directory of its own: a command that writes to the current
    directory by default (a run without ``--out``, ``compare.html``, ``ops.png``) writes there,
    never into the repository, and no test sees another's files. Tests reach the repository's
    files through ``Path(__file__)``."""
    where = Path(tempfile.mkdtemp(prefix="cwd-", dir=Path.cwd()))
    previous = os.getcwd()
    os.chdir(where)
    try:
        yield where
    finally:
        os.chdir(previous)


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
def reports() -> Iterator[list]:
    """Each run's report as ``finish`` asks for it, ``(EvaluatedRun, pictures)``, recorded instead of drawn: drawing
    the pictures is most of a small run's time (``test_report.py`` tests them). A module that trains runs uses it
    for all its tests (``pytestmark = pytest.mark.usefixtures("reports")``)."""
    from convzoo import report

    asked: list = []

    def record(run, *, pictures: bool = False) -> Path:
        asked.append((run, pictures))
        return run.run_dir / "report.html"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "write_report", record)
        yield asked


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
