"""Export to ONNX (checked with onnxruntime) and TorchScript, for every zoo model and from a trained run."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from convzoo import export
from convzoo.checkpoint import load_model
from convzoo.data import CLASSES, load_split, to_input
from convzoo.models import create_model, get_model_spec, list_models

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[dev]')")
onnx = pytest.importorskip("onnx")

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
# Reduced input sides where the native one is big: the smallest each network takes, near it.
SIZES = {"alexnet": 67, "nin": 67, "vgg11": 32, "vgg11_small": 32, "googlenet": 32, "resnet18": 32}
BATCHES = (2, 5)


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_split("test", SLICE)[0][:8]


def onnx_matches(path: Path, model: torch.nn.Module, images: torch.Tensor, size: int) -> float:
    """Run the ONNX file with onnxruntime at each batch size; assert it agrees with ``model``; the max difference."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert isinstance(inp.shape[0], str)  # a dynamic batch dimension
    largest = 0.0
    for n in BATCHES:
        x = to_input(images[:n], size)
        with torch.no_grad():
            want = model(x).numpy()
        (got,) = session.run(None, {inp.name: x.numpy()})
        assert got.shape == (n, 10)
        largest = max(largest, float(np.abs(got - want).max()))
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    assert largest <= 1e-4
    return largest


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_exports_to_onnx(name: str, images: torch.Tensor, tmp_path: Path) -> None:
    size = SIZES.get(name, get_model_spec(name).input_size)
    torch.manual_seed(0)
    model = create_model(name, input_size=size).eval()
    result = export.export_model(model, tmp_path / f"{name}.onnx", "onnx", images, size, batch_sizes=BATCHES)
    assert result.path.is_file() and result.max_abs_diff <= export.TOLERANCE
    onnx_matches(result.path, model, images, size)


def test_a_scratch_model_exports_through_its_torch_twin(images: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("lenet_bn", backend="scratch").eval()
    result = export.export_model(model, tmp_path / "scratch.onnx", "onnx", images, 28)
    onnx_matches(result.path, model, images, 28)  # compared with the from-scratch network itself
    graph = onnx.load(str(result.path))
    assert "Conv" in {node.op_type for node in graph.graph.node}


def test_cli_exports_the_trained_run(
    run: Path, images: torch.Tensor, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, out, _ = run_cli("export", str(run), "--format", "onnx", "--data-dir", str(SLICE))
    assert code == 0 and out.startswith(f"wrote {run / 'model.onnx'} (onnx")
    model = load_model(run / "model.safetensors")
    onnx_matches(run / "model.onnx", model, images, 28)
    props = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
    assert json.loads(props["convzoo.classes"]) == list(CLASSES)
    assert json.loads(props["convzoo.model"])["name"] == "lenet"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_round_trip(run: Path, images: torch.Tensor, tmp_path: Path,
                                run_cli: Callable[..., tuple[int, str, str]]) -> None:
    path = tmp_path / "lenet.pt"
    code, out, _ = run_cli("export", str(run), "--format", "torchscript", "--out", str(path), "--json",
                           "--data-dir", str(SLICE))
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["path"] == str(path)
    loaded = torch.jit.load(str(path))
    model = load_model(run / "model.safetensors")
    for n in (1, 7):  # neither is the batch size the trace saw
        x = to_input(images[:n], 28)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)


def test_a_mismatch_leaves_no_file(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "run_exported", lambda path, format, x: np.zeros((len(x), 10), np.float32))
    with pytest.raises(export.ExportError, match="differs from PyTorch"):
        export.export_run(run, "onnx", tmp_path / "m.onnx", data_dir=str(SLICE))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["missing run", "unknown format", "no onnxruntime", "unfinished run"])
def test_export_errors_are_one_line(case: str, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    run_cli: Callable[..., tuple[int, str, str]]) -> None:
    out = tmp_path / "out" / "model.onnx"
    run_dir, fmt, message = str(run), "onnx", ""
    if case == "missing run":
        run_dir, message = str(tmp_path / "nowhere"), "not a convzoo run directory"
    elif case == "unknown format":
        fmt, message = "tflite", "invalid choice: 'tflite'"
    elif case == "no onnxruntime":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
        message = "pip install"
    else:
        unfinished = tmp_path / "unfinished"
        shutil.copytree(run, unfinished, ignore=shutil.ignore_patterns("model.safetensors"))
        run_dir, message = str(unfinished), "model.safetensors"
    code, _, err = run_cli("export", run_dir, "--format", fmt, "--out", str(out), "--data-dir", str(SLICE))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.parent.exists() or not list(out.parent.iterdir())
