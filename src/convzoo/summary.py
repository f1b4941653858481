"""Layer-by-layer view of a network: output shapes (as the chapter prints them), parameters, MACs.

MACs (multiply-accumulates) come from ``torch.utils.flop_counter``, which counts the matrix
products and convolutions of one forward pass; FLOPs = 2 x MACs. Pooling, activations and
additions are not counted (a rounding error next to the products). A model from the registry
is measured through its ``torch``-backend twin on the meta device: no memory, no arithmetic,
and the network's MACs rather than those of the algorithm a from-scratch layer happens to use
(``convzoo.ops.conv2d`` may take an FFT).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import UserError
from .models import check_input_size, create_model, get_model_spec, rebuild

# The largest arguments ``summarize_model`` takes. Nothing is allocated whatever they are (the
# network is built on the meta device), but past these a network is not one anybody trains and
# its sizes leave int64: the same input side as ``train --resize``, channels and classes to spare.
MAX_INPUT_SIZE = 8192
MAX_IN_CHANNELS = 1024
MAX_NUM_CLASSES = 1_000_000


class SummaryError(UserError):
    """An argument of ``summary`` outside what a network can have (the message names the flag and the limit)."""


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int


@dataclass
class ModelSummary:
    model: str
    input_shape: list[int]
    layers: list[LayerRow]
    total_params: int
    total_macs: int

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """A plain-text table, one row per layer, with totals."""
        header = ("layer", "type", "output shape", "params", "MACs")
        rows = [(r.name, r.type, str(tuple(r.output_shape)), f"{r.params:,}", f"{r.macs:,}") for r in self.layers]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]

        def line(cells: tuple[str, ...]) -> str:
            left = "  ".join(c.ljust(w) for c, w in zip(cells[:3], widths[:3]))
            right = "  ".join(c.rjust(w) for c, w in zip(cells[3:], widths[3:]))
            return f"{left}  {right}"

        out = [f"{self.model}: input {tuple(self.input_shape)}", line(header), *map(line, rows)]
        out.append(f"total parameters: {self.total_params:,}")
        out.append(f"total MACs: {self.total_macs:,} (FLOPs = 2 x MACs = {2 * self.total_macs:,})")
        return "\n".join(out)


def summarize(model: nn.Module, input_size: int, *, in_channels: int = 1, name: str | None = None) -> ModelSummary:
    """Run one ``(1, in_channels, input_size, input_size)`` input through ``model`` and tabulate it.

    The rows are the leaf modules in the order the forward pass calls them. An input too small
    for the network raises ``InputSizeError`` naming the layer where the feature map vanishes.
    """
    config = getattr(model, "config", None)
    name = name or (config or {}).get("name", type(model).__name__)
    check_input_size(name, model, input_size)
    if config is not None:
        with torch.device("meta"):
            probe = rebuild(config, backend="torch")
        x = torch.zeros(1, in_channels, input_size, input_size, device="meta")
    else:
        probe = model
        param = next(model.parameters())
        x = torch.zeros(1, in_channels, input_size, input_size, device=param.device, dtype=param.dtype)

    modules = dict(model.named_modules())
    shapes: list[tuple[str, list[int]]] = []
    handles = []
    for module_name, module in probe.named_modules():
        if module_name and not any(True for _ in module.children()):
            def record(mod: nn.Module, args: object, out: torch.Tensor, _name: str = module_name) -> None:
                shapes.append((_name, list(out.shape)))
            handles.append(module.register_forward_hook(record))
    was_training = probe.training
    probe.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            probe(x)
    finally:
        probe.train(was_training)
        for handle in handles:
            handle.remove()

    flops = counter.get_flop_counts()
    root = type(probe).__name__
    layers = [
        LayerRow(
            name=module_name,
            type=type(modules[module_name]).__name__,
            output_shape=shape,
            params=sum(p.numel() for p in modules[module_name].parameters(recurse=False)),
            macs=sum(flops.get(f"{root}.{module_name}", {}).values()) // 2,
        )
        for module_name, shape in shapes
    ]
    return ModelSummary(
        model=name,
        input_shape=list(x.shape),
        layers=layers,
        total_params=sum(p.numel() for p in model.parameters()),
        total_macs=counter.get_total_flops() // 2,
    )


def summarize_model(
    name: str, *, input_size: int | None = None, in_channels: int = 1, num_classes: int = 10
) -> ModelSummary:
    """``summarize`` a registered model, at its native input size unless ``input_size`` is given.

    The model is built on the meta device: shapes, parameters and MACs without allocating a
    byte of weights, so its memory does not grow with the arguments; each is bounded
    (``MAX_INPUT_SIZE``, ``MAX_IN_CHANNELS``, ``MAX_NUM_CLASSES``) with a ``SummaryError``.
    """
    size = get_model_spec(name).input_size if input_size is None else input_size
    for flag, value, largest in (("--input-size", size, MAX_INPUT_SIZE), ("--in-channels", in_channels,
                                 MAX_IN_CHANNELS), ("--num-classes", num_classes, MAX_NUM_CLASSES)):
        if isinstance(value, int) and value > largest:  # too small: create_model and the shape check say so
            raise SummaryError(f"{flag} must be at most {largest:,}, got {value:,}")
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, in_channels=in_channels, input_size=size)
    return summarize(model, size, in_channels=in_channels, name=name)
