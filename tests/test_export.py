"""Export to ONNX (checked with onnxruntime) and TorchScript, for every zoo model and from a trained run."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
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


# --- the check, the file's interface, the errors: on a small LeNet --------------------------------------------------

@pytest.fixture(scope="module")
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("lenet").eval()


@pytest.fixture
def zeros() -> torch.nn.Module:
    """A LeNet whose logits are exactly 0 for every image (every weight and bias 0)."""
    model = create_model("lenet").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def _runtime_plus(monkeypatch: pytest.MonkeyPatch, offsets: dict[int, float]) -> None:
    """The exported file's logits as the runtime gives them, plus ``offsets[batch size]``."""
    real = export.run_exported
    monkeypatch.setattr(export, "run_exported", lambda path, format, x: real(path, format, x) + offsets[len(x)])


def test_the_onnx_file_takes_images_and_gives_logits_with_a_free_batch_at_opset_17(
    lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path
) -> None:
    result = export.export_model(lenet, tmp_path / "m.onnx", "onnx", images, 28)
    graph = onnx.load(str(result.path))
    (inp,), (out,) = graph.graph.input, graph.graph.output
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("images", ["batch", 1, 28, 28])
    assert (out.name, dims(out)) == ("logits", ["batch", 10])
    assert {o.domain: o.version for o in graph.opset_import}[""] == 17
    props = {p.key: p.value for p in graph.metadata_props}
    assert props == {"convzoo.model": json.dumps(lenet.config), "convzoo.classes": json.dumps(list(CLASSES)),
                     "convzoo.input": "float32 (N, 1, 28, 28): pixels / 255, light object on dark"}
    x = to_input(images[:3], 28)  # a batch size the check did not use
    with torch.no_grad():
        np.testing.assert_allclose(export.run_exported(result.path, "onnx", x), lenet(x).numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("format", export.FORMATS)
def test_logits_beyond_the_tolerance_are_refused_though_the_top_class_stays(
    format: str, lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _runtime_plus(monkeypatch, {2: 2e-4, 5: 0.0})  # the same offset on every logit keeps every row's argmax
    with pytest.raises(export.ExportError) as error:
        export.export_model(lenet, tmp_path / "out" / "m", format, images, 28)
    assert str(error.value).startswith(f"the exported {format} model differs from PyTorch on a batch of 2 (max "
                                       "|logit difference| 0.0002")
    assert str(error.value).endswith(", tolerance 0.0001); nothing written")
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("format", export.FORMATS)
def test_logits_within_the_tolerance_are_accepted_and_the_largest_difference_reported(
    format: str, lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _runtime_plus(monkeypatch, {2: 3e-5, 5: 7e-5})
    out = tmp_path / f"m{export.SUFFIXES[format]}"
    result = export.export_model(lenet, str(out), format, images, 28)
    assert result == export.ExportResult(out, format, 28, (2, 5), result.max_abs_diff)
    assert result.max_abs_diff == pytest.approx(7e-5, abs=2e-6)  # float32 rounding and the exporter's own
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    assert result.to_json() == {"path": str(out), "format": format, "input_size": 28, "channels": 1,
                                "batch_sizes": [2, 5], "max_abs_diff": result.max_abs_diff}


def test_a_difference_of_exactly_the_tolerance_is_accepted(
    zeros: torch.nn.Module, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "run_exported", lambda path, format, x: np.full((len(x), 10), export.TOLERANCE))
    result = export.export_model(zeros, tmp_path / "m.pt", "torchscript", images, 28)
    assert result.max_abs_diff == export.TOLERANCE  # 1e-4 - 0, in float64: exactly the tolerance


def test_another_top_class_within_the_tolerance_is_refused(
    zeros: torch.nn.Module, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def runtime(path: Path, format: str, x: torch.Tensor) -> np.ndarray:
        logits = np.zeros((len(x), 10), np.float32)
        logits[-1, 3] = 5e-5  # the last image's top class: 3 instead of 0 (ties go to the first)
        return logits

    monkeypatch.setattr(export, "run_exported", runtime)
    with pytest.raises(export.ExportError, match=r"^the exported torchscript model differs from PyTorch on a batch "
                                                 r"of 2 \(max \|logit difference\| 5e-05, tolerance 0.0001\); "
                                                 r"nothing written$"):
        export.export_model(zeros, tmp_path / "m.pt", "torchscript", images, 28)
    assert not list(tmp_path.iterdir())


def test_logits_of_another_shape_are_refused(
    lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "run_exported", lambda path, format, x: np.zeros((len(x), 9), np.float32))
    with pytest.raises(export.ExportError) as error:
        export.export_model(lenet, tmp_path / "m.onnx", "onnx", images, 28)
    assert str(error.value) == ("the exported onnx model gives logits of shape (2, 9) for a batch of 2, PyTorch "
                                "(2, 10); nothing written")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("format", export.FORMATS)
def test_one_batch_size_of_exactly_the_images_given_is_enough(
    format: str, lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path
) -> None:
    result = export.export_model(lenet, tmp_path / "m", format, images[:3], 28, batch_sizes=[3])
    assert result.batch_sizes == (3,) and result.max_abs_diff <= 1e-6
    with pytest.raises(export.ExportError, match=r"^the check needs 4 test images, got 3$"):
        export.export_model(lenet, tmp_path / "n", format, images[:3], 28, batch_sizes=(4, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_the_network_input_is_resized_to_the_input_side(images: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("lenet", input_size=32).eval()
    result = export.export_model(model, tmp_path / "m.onnx", "onnx", images, 32)
    assert result.input_size == 32 and result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, 32, 32]


def test_an_unknown_format_is_refused_before_any_work(lenet: torch.nn.Module, tmp_path: Path) -> None:
    message = r"^--format must be one of onnx, torchscript, got 'tflite'$"
    with pytest.raises(export.ExportError, match=message):
        export.export_model(lenet, tmp_path / "m", "tflite", torch.zeros(0, 28, 28, dtype=torch.uint8), 28)
    with pytest.raises(export.ExportError, match=message):
        export.export_run(tmp_path / "not a run", "tflite")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("missing, name", [("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("nameless", None)])
def test_a_missing_onnx_package_is_named_before_any_work(
    missing: str, name: str | None, lenet: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any work: with too few images, or no run directory, the missing package is still the error."""
    if name is None:  # an ImportError that does not name the module: the runtime is named
        real_import = __import__

        def fail(module: str, *args: object, **kwargs: object) -> object:
            if module == "onnxruntime":
                raise ImportError("it broke")
            return real_import(module, *args, **kwargs)

        monkeypatch.setattr("builtins.__import__", fail)
    else:
        monkeypatch.setitem(sys.modules, missing, None)  # `import onnx...` now fails
    message = (f"ONNX export needs the onnx and onnxruntime packages ({name or 'onnxruntime'} is missing): "
               f"{export.INSTALL}")
    with pytest.raises(export.ExportError) as error:
        export.export_model(lenet, tmp_path / "m.onnx", "onnx", torch.zeros(1, 28, 28, dtype=torch.uint8), 28)
    assert str(error.value) == message
    with pytest.raises(export.ExportError) as error:
        export.export_run(tmp_path / "not a run")  # ONNX by default
    assert str(error.value) == message
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_needs_no_onnxruntime(
    run: Path, lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert export.export_model(lenet, tmp_path / "m.pt", "torchscript", images, 28).path.is_file()
    assert export.export_run(run, "torchscript", tmp_path / "run.pt", data_dir=str(SLICE)).path.is_file()


@pytest.mark.parametrize("format, where", [("onnx", "torch.onnx.export"), ("torchscript", "torch.jit.trace"),
                                           ("torchscript", "torch.jit.load")])
def test_only_deprecation_warnings_are_silenced(
    format: str, where: str, lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The exporters' deprecation notices are silenced; any other warning (a tracer's warning that the trace
    may be wrong, say) reaches the user."""
    module, name = where.rsplit(".", 1)
    owner = {"torch.onnx": torch.onnx, "torch.jit": torch.jit}[module]
    real = getattr(owner, name)

    def warns(*args: object, **kwargs: object) -> object:
        warnings.warn("deprecated", DeprecationWarning, stacklevel=2)
        warnings.warn("the trace might be wrong", UserWarning, stacklevel=2)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, warns)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        export.export_model(lenet, tmp_path / "m", format, images, 28)
    assert {(w.category, str(w.message)) for w in seen} == {(UserWarning, "the trace might be wrong")}


def test_the_check_runs_the_file_on_the_cpu(
    lenet: torch.nn.Module, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime's CPU provider (not a GPU one an onnxruntime-gpu install would pick); TorchScript mapped to the
    CPU whatever device it was saved from."""
    sessions, loads = [], []
    session, load = ort.InferenceSession, torch.jit.load
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: sessions.append((a, k)) or session(*a, **k))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append((a, k)) or load(*a, **k))
    onnx_file = export.export_model(lenet, tmp_path / "m.onnx", "onnx", images, 28).path
    script = export.export_model(lenet, tmp_path / "m.pt", "torchscript", images, 28).path
    assert [(Path(a[0]).suffix, k) for a, k in sessions] == [(".onnx", {"providers": ["CPUExecutionProvider"]})] * 2
    assert [(Path(a[0]).suffix, k) for a, k in loads] == [(".pt", {"map_location": "cpu"})] * 2
    x = to_input(images[:1], 28).double()  # float64 is run as float32
    assert export.run_exported(onnx_file, "onnx", x).dtype == np.float32
    assert export.run_exported(script, "torchscript", x).dtype == np.float32


def test_the_torch_twin_of_a_from_scratch_network_has_its_weights(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = create_model("lenet_bn").eval()
    assert export.torch_twin(model) is model
    older = create_model("lenet")
    older.config = {k: v for k, v in older.config.items() if k != "backend"}  # a configuration without a backend
    assert export.torch_twin(older) is older  # is a torch.nn one
    scratch = create_model("lenet_bn", backend="scratch")
    scratch.load_state_dict(model.state_dict())
    scratch.eval()
    twin = export.torch_twin(scratch)
    assert twin is not scratch and twin.config == {**scratch.config, "backend": "torch"} and not twin.training
    assert type(twin) is type(model) and all(p.device.type == "cpu" for p in twin.parameters())
    x = to_input(images[:4], 28)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(twin(x), scratch(x), rtol=1e-5, atol=1e-5)


def test_export_run_checks_the_runs_model_on_its_first_test_images(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's model loaded on the CPU, the first 8 test images from ``data_dir`` (else the run's), the run's
    input side, ``run_dir/model.onnx`` or ``model.pt`` unless told."""
    loads, data_dirs, exports = [], [], []
    load_run, run_data = export.load_run, export.run_data
    monkeypatch.setattr(export, "load_run", lambda *a: loads.append(a) or load_run(*a))
    monkeypatch.setattr(export, "run_data", lambda config, data_dir, **k: data_dirs.append(data_dir)
                        or run_data(config, data_dir, **k))
    monkeypatch.setattr(export, "export_model", lambda *a, **k: exports.append((a, k)) or "done")
    elsewhere = tmp_path / "data"
    shutil.copytree(SLICE, elsewhere)
    assert export.export_run(run) == "done"
    assert export.export_run(str(run), "torchscript", data_dir=str(elsewhere)) == "done"
    assert export.export_run(run, "onnx", str(tmp_path / "m.onnx")) == "done"
    assert loads == [(run, "cpu"), (str(run), "cpu"), (run, "cpu")]
    assert data_dirs == [None, str(elsewhere), None]  # None: the run's own
    test_images = load_split("test", SLICE)[0]
    model = load_model(run / "model.safetensors")
    for (args, kwargs), out, format in zip(exports, [run / "model.onnx", run / "model.pt", tmp_path / "m.onnx"],
                                           ["onnx", "torchscript", "onnx"], strict=True):
        trained, path, fmt, pictures, size = args
        assert kwargs == {"classes": tuple(CLASSES)} and (path, fmt, size) == (out, format, 28)
        assert torch.equal(pictures[:, 0], test_images[:8])
        assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), model.state_dict().values()))


# --- an export into a run directory (issue 23) ----------------------------------------------------------------------

@pytest.mark.parametrize("own", ["model.safetensors", "checkpoint.safetensors", "config.json"])
def test_an_out_naming_a_runs_own_file_is_refused_and_the_file_kept(
    own: str, run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / own).touch()  # checkpoint.safetensors is gone from a finished run: refused all the same
    before = {path.name: path.read_bytes() for path in copy.iterdir()}
    code, out, err = run_cli("export", str(copy), "--format", "torchscript", "--out", str(copy / own),
                             "--data-dir", str(SLICE))
    assert code == 2 and out == ""
    assert err == f"error: --out {copy / own} would replace the run's own {own}; choose another --out\n"
    assert {path.name: path.read_bytes() for path in copy.iterdir()} == before


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_an_export_into_the_run_holds_it_and_sweeps_what_a_killed_export_left(
    run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    from convzoo.rundir import LOCK, RunLock

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    stale = copy / ".model.pt.0123abcd.tmp.pt"
    stale.write_bytes(b"half an export")
    lock = RunLock(copy)
    lock.acquire()
    try:
        code, out, err = run_cli("export", str(copy), "--format", "torchscript", "--data-dir", str(SLICE))
        assert code == 2 and out == ""
        assert err.startswith("error: ") and err.count("\n") == 1 and f"in use by process {os.getpid()}" in err
        assert stale.exists() and not (copy / "model.pt").exists()
    finally:
        lock.release()
    code, out, err = run_cli("export", str(copy), "--format", "torchscript", "--data-dir", str(SLICE))
    assert code == 0 and out.startswith(f"wrote {copy / 'model.pt'} (torchscript"), err
    assert not stale.exists() and not (copy / LOCK).exists()
