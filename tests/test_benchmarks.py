"""The benchmark scripts stay runnable: a CPU rehearsal of the GPU suite, its bookkeeping, the seed sweep's
variants, and the GPU switches' plumbing."""

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
from convzoo.runtime import compute_settings

ROOT = Path(__file__).resolve().parents[1]
SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_suite  # noqa: E402
import seed_sweep  # noqa: E402


def test_gpu_suite_rehearses_its_items_on_the_cpu_and_resumes(tmp_path: Path) -> None:
    """A training item and a seed-sweep item, shrunk to CPU size; a second call with --resume keeps both."""
    env = {**os.environ, "CONVZOO_DATA": str(SLICE), "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--only", "nin_d2l_fix_compile",
               "nin_seeds", "--out", str(tmp_path)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.json", "suite.log", "summary.md"]
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert suite["commit"] and "gpu_suite.py" in suite["command"] and not suite["failed"]
    item = suite["items"]["nin_d2l_fix_compile"]
    run = item["results"]["convzoo"]["runs"][0]
    assert len(run["test_acc"]) == 2 and run["wall_seconds"] > 0
    config = item["config"]
    assert config["device"] == "cpu" and not config["compile"] and "commit" in item
    assert (config["init"], config["lr"]) == ("kaiming", 0.05)  # the proposed fix reaches the run
    sweep = suite["items"]["nin_seeds"]
    assert sorted(sweep["summary"]) == ["nin book", f"nin {gpu_suite.NIN_FIX}"]
    assert all(len(run["history"]) == 1 and run["probes"][0]["step"] == 0 for run in sweep["runs"])
    summary = (tmp_path / "summary.md").read_text()
    assert "| nin_d2l_fix_compile |" in summary and "## nin_seeds" in summary and "| nin | book |" in summary

    proc = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "== nin_d2l_fix_compile" not in proc.stdout and "== nin_seeds" not in proc.stdout
    resumed = json.loads((tmp_path / "suite.json").read_text())
    assert resumed["items"] == suite["items"] and len(resumed["earlier_calls"]) == 1


def _bench(model: str, wall: float, acc: float, *, batch: int = 128, epochs: int = 10, baseline: float | None = None,
           recipe_name: str = "d2l") -> dict:
    """A bench_train.py result as the suite reads it: wall seconds and final accuracy of one pipeline or two."""
    def result(seconds: float) -> dict:
        return {"wall_seconds": {"mean": seconds}, "final_test_acc": {"mean": acc}, "projected": True}

    results = {"convzoo": result(wall)} if wall else {}
    if baseline:
        results["baseline"] = result(baseline)
    return {"model": model, "recipe": recipe_name, "config": {"batch_size": batch, "epochs": epochs},
            "results": results}


def test_the_chapter_is_the_fastest_book_run_above_chance_of_each_network() -> None:
    items = {
        "lenet_d2l": _bench("lenet", 1.6, 0.81, batch=256, baseline=18.7),
        "alexnet_d2l": _bench("alexnet", 26.4, 0.878),
        "alexnet_d2l_compile": _bench("alexnet", 20.0, 0.877),
        "alexnet_b512_compile": _bench("alexnet", 15.0, 0.86, batch=512),  # not the book's batch
        "nin_d2l": _bench("nin", 10.0, 0.10),  # at chance
        "baseline_224": _bench("alexnet", 0, 0.79, baseline=114.1),
    }
    line = gpu_suite.chapter(items)
    assert line.startswith("the chapter (10 epochs each at the book's recipe, fastest run above chance): 21.6 s")
    assert "alexnet 20.0 s (alexnet_d2l_compile" in line and "not measured: vgg11_small, nin, googlenet" in line
    assert gpu_suite.baseline_wall(items, items["alexnet_d2l_compile"]) == (114.1, True)
    assert gpu_suite.baseline_wall(items, items["alexnet_b512_compile"]) == (None, False)
    assert gpu_suite.baseline_wall(items, _bench("vgg11_small", 40.0, 0.91)) == (114.1, True)  # the 224 px loader


def test_every_suite_item_parses_and_shrinks_for_the_cpu() -> None:
    names = [item.name for item in gpu_suite.ITEMS]
    assert len(names) == len(set(names)) and gpu_suite.GATE in names
    assert gpu_suite.flags("init=kaiming,lr=0.05") == ("--init", "kaiming", "--lr", "0.05")
    for item in gpu_suite.ITEMS:
        args = gpu_suite.tiny_args(item)
        assert "--compile" not in args and args[args.index("--device") + 1] == "cpu"


def test_seed_sweep_variants_change_the_recipe_or_the_network() -> None:
    base = recipe("nin", resize=67)
    config = seed_sweep.variant_config(base, seed_sweep.parse_variant("lr_scale=0.5,init=kaiming,batch_size=64"))
    assert (config.lr, config.init, config.batch_size) == (0.05, "kaiming", 64)
    assert seed_sweep.parse_variant("book") == {}
    model = seed_sweep.build(base, {"bias": "zero", "last_relu": "off"}, torch.device("cpu"))
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert isinstance(model[7][5], torch.nn.Identity) and isinstance(model[7][3], torch.nn.ReLU)
    with pytest.raises(SystemExit, match="nin only"):
        seed_sweep.build(recipe("alexnet", resize=67), {"last_relu": "off"}, torch.device("cpu"))


def test_cuda_runs_autotune_and_allow_tf32_and_restore_both(monkeypatch: pytest.MonkeyPatch) -> None:
    before = (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    monkeypatch.setattr(runtime, "resolve_device", lambda _name: torch.device("cuda"))
    with compute_settings(recipe("lenet")):
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
    with compute_settings(recipe("lenet", deterministic=True)):  # determinism wins over speed
        assert not torch.backends.cudnn.benchmark
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
    with compute_settings(recipe("lenet", autotune=False)):
        assert not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
