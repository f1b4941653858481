"""The benchmark scripts stay runnable: a CPU rehearsal of one GPU-suite item, and the GPU switches' plumbing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convzoo import runtime
from convzoo.config import recipe
from convzoo.runtime import backend_settings

ROOT = Path(__file__).resolve().parents[1]
SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


def test_gpu_suite_rehearses_an_item_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "CONVZOO_DATA": str(SLICE), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--only",
                           "alexnet_mfu_compile", "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.json", "suite.log", "summary.md"]
    item = json.loads((tmp_path / "suite.json").read_text())["items"]["alexnet_mfu_compile"]
    run = item["results"]["convzoo"]["runs"][0]
    assert len(run["test_acc"]) == 2 and run["wall_seconds"] > 0
    assert item["config"]["device"] == "cpu" and "commit" in item
    assert "| alexnet_mfu_compile |" in (tmp_path / "summary.md").read_text()


def test_cuda_runs_autotune_and_allow_tf32_and_restore_both(monkeypatch: pytest.MonkeyPatch) -> None:
    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    monkeypatch.setattr(runtime, "resolve_device", lambda _name: torch.device("cuda"))
    with backend_settings(recipe("lenet")):
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
    with backend_settings(recipe("lenet", deterministic=True)):  # determinism wins over speed
        assert not torch.backends.cudnn.benchmark
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
    with backend_settings(recipe("lenet", autotune=False)):
        assert not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
