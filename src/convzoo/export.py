"""Export a trained network to ONNX or TorchScript, checked against PyTorch on real test images.

The exported network takes what ``convzoo.data.to_input`` makes: float32 ``(N, C, S, S)``
pixels / 255 (``C`` the run's channels, 1 or 3), resized to the run's input side ``S``; it returns
``(N, K)`` logits in the order of the run's classes (``Run.classes``; an ONNX file names them in its
``convzoo.classes`` metadata). ``N`` is free (a dynamic batch dimension).

* ONNX goes through PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``,
  opset 17). The newer ``torch.export``-based exporter (the default since PyTorch 2.9) gives the
  same results for this zoo but needs the ``onnxscript`` package, takes several times longer and
  logs to stderr; the TorchScript-based one needs nothing more and is reliable on PyTorch 2.13
  (which warns that it is deprecated: the warning is silenced here). Needs ``onnx`` and
  ``onnxruntime``: ``pip install 'convzoo[export]'``.
* TorchScript is ``torch.jit.trace`` saved with ``torch.jit.save`` (deprecated in favour of
  ``torch.export`` in recent PyTorch, still working in 2.13); load it with ``torch.jit.load``.

A network built with ``backend="scratch"`` is exported through its ``torch``-backend twin (same
``state_dict``): tracing the from-scratch ops would record strided views, FFTs and shape
arithmetic done in Python rather than convolutions. The check compares the exported file with
the network as given, so the twin is checked too.

The file is serialized in memory, written to a temporary name through ``convzoo.fileio``, checked
(``batch_sizes`` of real images, logits within ``TOLERANCE`` and the same predicted classes), and
only then renamed to its final name.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import build_from_config
from .data import CLASSES, to_input
from .errors import UserError
from .evaluate import run_data
from .fileio import atomic_path
from .rundir import check_output, load_run, read_run_config, run_classes, writing_into
from .terms import option

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4  # max |logit difference| between the exported file and PyTorch (float32)
OPSET = 17
INSTALL = "pip install 'onnx>=1.16' 'onnxruntime>=1.18'  (or: pip install 'convzoo[export]')"


class ExportError(UserError):
    """An export that cannot be done here (unknown format, missing onnxruntime) or that does not match PyTorch."""


@dataclass
class ExportResult:
    path: Path
    format: str
    input_size: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float  # largest |logit difference| to PyTorch over the checked images
    channels: int = 1  # of the input

    def to_json(self) -> dict:
        return {"path": str(self.path), "format": self.format, "input_size": self.input_size,
                "channels": self.channels, "batch_sizes": list(self.batch_sizes), "max_abs_diff": self.max_abs_diff}


def torch_twin(model: nn.Module) -> nn.Module:
    """``model`` itself when it is built from ``torch.nn`` layers, else its ``torch``-backend twin with its weights."""
    if model.config.get("backend", "torch") == "torch":
        return model
    twin = build_from_config({**model.config, "backend": "torch"})  # on the meta device: assign the weights
    twin.load_state_dict(model.state_dict(), assign=True)
    return twin.eval()


def _onnxruntime():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        missing = exc.name or "onnxruntime"
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({missing} is missing): {INSTALL}") \
            from None
    return onnx, onnxruntime


def _onnx_bytes(model: nn.Module, example: torch.Tensor, input_size: int,
                classes: Sequence[str] = CLASSES) -> bytes:
    onnx, _ = _onnxruntime()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter (see the docstring)
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=["images"],
            output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, {
        "convzoo.model": json.dumps(model.config), "convzoo.classes": json.dumps(list(classes)),
        "convzoo.input": f"float32 (N, {example.shape[1]}, {input_size}, {input_size}): pixels / 255"
                         + (", light object on dark" if list(classes) == list(CLASSES) else ""),
    })
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


def _torchscript_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated (see the docstring)
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def run_exported(path: str | Path, format: str, x: torch.Tensor) -> np.ndarray:
    """Logits of the exported file at ``path`` for the network input ``x`` (CPU)."""
    x = x.detach().float().cpu().contiguous()
    if format == "onnx":
        _, ort = _onnxruntime()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(x).numpy()


def export_model(
    model: nn.Module, out: str | Path, format: str, images: torch.Tensor, input_size: int,
    *, batch_sizes: Sequence[int] = (2, 5), classes: Sequence[str] = CLASSES,
) -> ExportResult:
    """Export ``model`` (from ``create_model``) to ``out`` and check it on ``images``.

    ``images``: uint8 ``(N, H, W)`` or ``(N, C, H, W)`` test pictures, at least ``max(batch_sizes)`` of them; each
    batch size takes the first images, turned into network input by ``to_input(images, input_size)``.
    Raises ``ExportError`` and leaves no file at ``out`` when the export does not reproduce
    ``model`` (logits within ``TOLERANCE``, same predicted classes).
    """
    if format not in FORMATS:
        raise ExportError(f"{option('format')} must be one of {', '.join(FORMATS)}, got {format!r}", field="format")
    if format == "onnx":
        _onnxruntime()  # fail before any work when it is missing
    if len(images) < max(batch_sizes):
        raise ExportError(f"the check needs {max(batch_sizes)} test images, got {len(images)}")
    model = model.cpu().eval()
    twin = torch_twin(model)
    inputs = [to_input(images[:n], input_size) for n in batch_sizes]
    with torch.no_grad():
        expected = [model(x).numpy() for x in inputs]
    largest = 0.0
    # Serialized in memory, then written by Python: a full disk is an OSError that ``atomic_path``
    # turns into one line and cleans up (``torch.jit.save`` to a file aborts the process instead).
    data = (_onnx_bytes(twin, inputs[0], input_size, classes) if format == "onnx"
            else _torchscript_bytes(twin, inputs[0]))
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        for x, want in zip(inputs, expected):
            got = run_exported(tmp, format, x)
            if got.shape != want.shape:
                raise ExportError(f"the exported {format} model gives logits of shape {got.shape} for a batch of "
                                  f"{len(x)}, PyTorch {want.shape}; nothing written")
            diff = float(np.abs(got - want).max())
            largest = max(largest, diff)
            if diff > TOLERANCE or not np.array_equal(got.argmax(1), want.argmax(1)):
                raise ExportError(f"the exported {format} model differs from PyTorch on a batch of {len(x)} "
                                  f"(max |logit difference| {diff:.3g}, tolerance {TOLERANCE}); nothing written")
    return ExportResult(Path(out), format, input_size, tuple(batch_sizes), largest, int(inputs[0].shape[1]))


def export_run(
    run_dir: str | Path, format: str = "onnx", out: str | Path | None = None, *, data_dir: str | None = None,
) -> ExportResult:
    """Export a run's trained model (default ``run_dir/model.onnx`` or ``model.pt``), checked on its test images.

    ``out`` may not replace one of a run's own files (``rundir.check_output``); an export into a run directory is
    written while holding it (``rundir.writing_into``), which sweeps what a killed export left there.
    """
    if format not in FORMATS:
        raise ExportError(f"{option('format')} must be one of {', '.join(FORMATS)}, got {format!r}", field="format")
    if format == "onnx":
        _onnxruntime()
    out = check_output(out if out is not None else Path(run_dir) / f"model{SUFFIXES[format]}")
    with writing_into(out):
        config, model, _ = load_run(run_dir, "cpu")
        images = run_data(config, data_dir, warn=None).test_images[:8]
        return export_model(model, out, format, images, config.input_size,
                            classes=run_classes(read_run_config(run_dir)))
