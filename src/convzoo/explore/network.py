"""A trained run seen from the inside: its prediction, every layer's feature maps, its first kernels,
an attribution map (Grad-CAM or the gradient's saliency) and the receptive fields, for one image at a time.

Everything goes through the library's public path: ``Run.predict`` classifies (as ``convzoo predict``
does), ``convzoo.data.to_input`` makes the network's input, ``convzoo.figures`` draws the kernels.
What one request computes and sends is bounded: at most ``MAX_LAYERS`` layers, ``MAX_CHANNELS``
channels per layer, feature maps averaged down to ``MAX_SIDE`` a side.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam, Saliency
from torch import nn

from ..api import Run
from ..data import load_split, to_input
from ..figures import FEATURE_CMAP, figure_png, layer_kernels_figure
from .receptive import Field, receptive_fields
from .validate import RequestError

MAX_LAYERS = 24  # deeper networks show this many, evenly spaced from the first to the last
MAX_CHANNELS = 16
DEFAULT_CHANNELS = 8
MAX_SIDE = 32  # a feature map larger than this is averaged down (adaptive average pooling) before it is sent
TOP_K = 5
METHODS = ("gradcam", "gradient")  # the attribution maps (RunExplorer.attribution)


def class_names(run: Run) -> list[str]:
    """The names of ``run``'s classes, by label (the one place the explorer reads them): its data's, from its
    ``config.json`` (a folder's names for a run on an image folder), not Fashion-MNIST's."""
    return list(run.classes)


def encode(values: torch.Tensor) -> str:
    """uint8 values, row-major, as base64 (the page decodes them into canvas pixels)."""
    return base64.b64encode(values.to(torch.uint8).contiguous().cpu().numpy().tobytes()).decode("ascii")


def _to_bytes(values: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """``values`` scaled to 0..255 between their minimum and maximum, with those two."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255 if high > low else torch.zeros_like(values)
    return scaled.round().clamp(0, 255), low, high


def colormap() -> list[list[int]]:
    """The 256 RGB colours of the feature maps' colour scale, the one ``convzoo.figures`` uses."""
    from matplotlib import colormaps

    table = colormaps[FEATURE_CMAP](np.linspace(0, 1, 256))[:, :3]
    return (table * 255).round().astype(int).tolist()


def _shown_layers(model: nn.Module) -> list[str]:
    """The convolution and pooling layers whose outputs the page shows, in the order they run."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    if len(names) > MAX_LAYERS:
        picks = sorted(set(np.linspace(0, len(names) - 1, MAX_LAYERS).round().astype(int).tolist()))
        names = [names[i] for i in picks]
    return names


class RunExplorer:
    """One run, opened once, answering the page's questions about single images."""

    def __init__(self, run: Run, data_dir: str | None = None) -> None:
        self.run = run
        self.size = run.config.input_size
        self.classes = class_names(run)
        self.data_dir = data_dir or run.config.data_dir
        modules = dict(run.model.named_modules())
        self.layers = _shown_layers(run.model)
        self._modules = [modules[name] for name in self.layers]
        self.fields = receptive_fields(run.model)
        self._lock = threading.Lock()  # one forward pass at a time: the model's hooks are shared state
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._kernels: bytes | None = None
        self._kernels_lock = threading.Lock()
        self._last_conv_name, self._last_conv = [(n, m) for n, m in run.model.named_modules()
                                                 if isinstance(m, nn.Conv2d)][-1]
        zeros = torch.zeros(1, 1, 28, 28, dtype=torch.uint8, device=run.device)
        shapes = self._forward(to_input(zeros, self.size))
        self.shapes = {name: list(out.shape) for name, out in shapes.items()}

    def info(self) -> dict:
        """What the page needs once: the model, its classes and every shown layer with its receptive field."""
        config = self.run.config
        return {
            "model": config.model, "input_size": self.size, "classes": self.classes, "test_images": self.test_count(),
            "colormap": colormap(),
            "layers": [{"name": name, "type": type(module).__name__, "shape": self.shapes[name],
                        "field": self.fields[name].to_json()} for name, module in zip(self.layers, self._modules)],
        }

    def test_count(self) -> int:
        return len(self._test_split()[0])

    def _test_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._test is None:
            images, labels = load_split("test", self.data_dir)
            limit = self.run.config.limit_test
            self._test = images[:limit], labels[:limit]
        return self._test

    def test_image(self, index: int) -> tuple[torch.Tensor, int]:
        """Test image ``index`` as uint8 pixels ``(1, 28, 28)`` and its label."""
        images, labels = self._test_split()
        if not 0 <= index < len(images):
            raise RequestError(f"test image index must be 0..{len(images) - 1}, got {index}")
        return images[index : index + 1], int(labels[index])

    def kernels_png(self) -> bytes:
        """The first convolution layer's kernels, drawn by ``convzoo.figures.layer_kernels_figure``."""
        with self._kernels_lock:
            if self._kernels is None:
                self._kernels = figure_png(layer_kernels_figure(self.run.model))
            return self._kernels

    @contextmanager
    def _recording(self) -> Iterator[dict[str, torch.Tensor]]:
        """The shown layers' outputs of the forward passes run inside the block, by layer name."""
        outputs: dict[str, torch.Tensor] = {}

        def record(name: str):
            def hook(_module: nn.Module, _args: tuple, out: torch.Tensor) -> None:  # None: the output unchanged
                if name not in outputs:  # the first pass of the block (Run.predict's), not captum's
                    outputs[name] = out.detach()[0].float().cpu()
            return hook

        handles = [module.register_forward_hook(record(name)) for name, module in zip(self.layers, self._modules)]
        try:
            yield outputs
        finally:
            for handle in handles:
                handle.remove()

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._lock, torch.no_grad(), self._recording() as outputs:
            self.run.model(x)
        return outputs

    def attribution(self, x: torch.Tensor, target: int, method: str) -> torch.Tensor:
        """Which input pixels moved class ``target``, ``(S, S)`` and non-negative, by captum.

        ``gradcam``: Grad-CAM on the last convolution layer (the gradient-weighted sum of its maps,
        positive part), each unit placed at the centre of its receptive field on the input and
        interpolated bilinearly between them: one forward pass and a backward pass through the head
        only. ``gradient``: ``|d logit / d pixel|`` (saliency), a backward pass through the whole network.
        """
        x = x.detach().clone().requires_grad_()
        if method == "gradient":
            return Saliency(self.run.model).attribute(x, target=target, abs=True).detach()[0, 0]
        cam = LayerGradCam(self.run.model, self._last_conv).attribute(x, target=target, relu_attributions=True)
        return _on_input(cam.detach()[0, 0], self.fields[self._last_conv_name], self.size)

    def analyze(self, pixels: torch.Tensor, *, channels: int = DEFAULT_CHANNELS, label: int | None = None) -> dict:
        """What the page shows first for uint8 ``pixels`` ``(1, 28, 28)``: prediction, input and feature maps.

        The prediction is ``Run.predict``'s, and the feature maps are recorded during its own forward
        pass (the first one, with test-time augmentation); ``label``: a test image's true class.
        """
        if not 1 <= channels <= MAX_CHANNELS:
            raise RequestError(f"channels must be 1..{MAX_CHANNELS}, got {channels}")
        x = to_input(pixels.to(self.run.device), self.size)
        with self._lock, self._recording() as outputs:  # one network computation at a time: the cores are few
            prediction = self.run.predict(pixels, top_k=min(TOP_K, len(self.classes)), invert="no")[0]
        return {
            "top": [{"label": i, "class": self.classes[i], "probability": p} for i, p in prediction.top_labels],
            "unlike_training_data": prediction.unlike_training_data,
            "truth": None if label is None else {"label": label, "class": self.classes[label]},
            "input": {"size": self.size, "data": encode((x[0, 0] * 255).round().clamp(0, 255))},
            "layers": [_feature_maps(name, outputs[name], channels) for name in self.layers],
        }

    def explain(self, pixels: torch.Tensor, target: int, method: str = "gradcam") -> dict:
        """The attribution map of class ``target`` for ``pixels`` (``attribution``), scaled to bytes.

        A request of its own, so the page shows the prediction and the maps first and this map
        a moment later (and for any class the user clicks).
        """
        if method not in METHODS:
            raise RequestError(f"map must be one of {', '.join(METHODS)}, got {method[:20]!r}")
        if not 0 <= target < len(self.classes):
            raise RequestError(f"target must be a class label 0..{len(self.classes) - 1}, got {target}")
        x = to_input(pixels.to(self.run.device), self.size)
        with self._lock:
            attribution = self.attribution(x, target, method).float().cpu()
        return {"method": method, "target": target, "class": self.classes[target], "size": self.size,
                "data": encode(_to_bytes(attribution)[0])}


def _on_input(cam: torch.Tensor, field: Field, size: int) -> torch.Tensor:
    """A layer's ``(h, w)`` map on the ``size x size`` input: unit ``i`` sits at the centre of its receptive
    field, ``field.start + i * field.jump + (field.size - 1) / 2``; bilinear between units, the edge unit's
    value beyond them (a plain resize would stretch a map whose units see only the middle of the input)."""
    def coordinates(units: int) -> torch.Tensor:
        if units == 1:
            return torch.zeros(size)
        centre = (torch.arange(size, dtype=torch.float32) - field.start - (field.size - 1) / 2) / field.jump
        return centre / (units - 1) * 2 - 1  # grid_sample's [-1, 1], align_corners=True

    rows, cols = coordinates(cam.shape[0]), coordinates(cam.shape[1])
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)  # (size, size, (x, y))
    return F.grid_sample(cam[None, None].float(), grid[None], mode="bilinear", padding_mode="border",
                         align_corners=True)[0, 0]


def _feature_maps(name: str, out: torch.Tensor, channels: int) -> dict:
    """One layer's first ``channels`` maps, averaged down to at most ``MAX_SIDE`` a side, as bytes on one scale."""
    maps = out[:channels]
    if max(maps.shape[-2:]) > MAX_SIDE:
        maps = F.adaptive_avg_pool2d(maps[None], (min(MAX_SIDE, maps.shape[-2]), min(MAX_SIDE, maps.shape[-1])))[0]
    scaled, low, high = _to_bytes(maps)
    return {"name": name, "shape": list(out.shape), "shown": list(maps.shape), "low": low, "high": high,
            "data": encode(scaled)}
