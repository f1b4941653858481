"""What a user installs and sees first: the licence, ``--version``, and ``make demo`` without the test tools."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import convzoo

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_licence_is_mit_as_pyproject_says() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the convzoo authors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text
    assert pyproject()["project"]["license"] == {"text": "MIT"}


def test_version(run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = run_cli("--version")
    assert (code, err) == (0, "")
    assert re.fullmatch(rf"convzoo {re.escape(convzoo.__version__)} \(torch \S+, Python \d+\.\d+\.\d+\)\n", out)
    assert pyproject()["project"]["version"] == convzoo.__version__


def test_the_extras() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    names = {key: {re.split(r"[<>=\[ ]", requirement)[0] for requirement in value} for key, value in extras.items()}
    assert names["tensorboard"] == {"tensorboard"}
    assert {"pytest", "tensorboard", "nbclient", "nbformat", "ipykernel"} | names["export"] <= names["dev"]
    assert names["explore"] == {"starlette", "uvicorn", "captum"}  # nothing that brings torchvision or opencv
    assert names["explore"] | {"playwright"} <= names["dev"]  # make test runs the explorer's browser tests


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_only_what_running_needs() -> None:
    """``make -n -B`` prints every command a target would run from scratch, without running any."""
    def installs(target: str) -> list[str]:
        result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if "pip install" in line]

    assert [line.split()[-1] for line in installs("demo")] == ["."]
    assert [line.split()[-1] for line in installs("test")] == ["'.[dev]'"]  # what .ci/run (make test) needs
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_python_m_convzoo_version() -> None:
    result = subprocess.run([sys.executable, "-m", "convzoo", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"convzoo {convzoo.__version__} (torch ")


def test_the_command_starts_without_matplotlib() -> None:
    """Start-up time: only the commands that draw import matplotlib (about half a second of every start)."""
    import subprocess
    import sys

    code = ("import sys, convzoo.cli, convzoo.api; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
