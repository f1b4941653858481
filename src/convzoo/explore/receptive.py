"""Receptive fields: which input pixels each unit of a layer's output can see, from the layers' geometry.

A unit ``(y, x)`` of a layer's output sees the input rows ``start + y * jump`` to
``start + y * jump + size - 1`` (and the same for columns), where walking the network from the
input, each convolution or pooling with kernel ``k``, stride ``s``, padding ``p`` and dilation
``d`` (extent ``e = d (k - 1) + 1``) changes the three numbers as

    start += -p * jump        size += (e - 1) * jump        jump *= s

Rows before 0 or after the input's last are padding. Blocks whose branches run in parallel
(residual units, Inception) see the union of their branches; a block this module does not know
is walked as a chain of its children, which can only overstate its field.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..ops.shapes import pair

# The parallel paths of the zoo's branching blocks, by class name: each a chain of child names.
# A path that names a missing child (a residual unit without its 1x1 shortcut) is skipped; the
# identity path of a residual unit sees what the block's input sees, inside every other path.
BRANCHES: dict[str, list[list[str]]] = {
    "Residual": [["conv1", "bn1", "conv2", "bn2"], ["conv3"]],
    "Inception": [["p1_1"], ["p2_1", "p2_2"], ["p3_1", "p3_2"], ["p4_1", "p4_2"]],
}


@dataclass(frozen=True)
class Field:
    """The receptive field of every unit of one layer's output, along one axis (the zoo's layers are square)."""

    start: int  # first input row seen by unit 0 (negative: padding)
    size: int  # rows seen by one unit
    jump: int  # input rows between neighbouring units

    def rows(self, first: int, last: int) -> tuple[int, int]:
        """The input rows (inclusive) seen by units ``first..last``."""
        return self.start + first * self.jump, self.start + last * self.jump + self.size - 1

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "size": self.size, "jump": self.jump}


def _geometry(module: nn.Module) -> tuple[int, int, int, int] | None:
    """``(kernel, stride, padding, dilation)`` of a convolution or pooling layer, rows only; else None."""
    if isinstance(module, nn.Conv2d):
        if module.padding == "same":
            padding = (module.dilation[0] * (module.kernel_size[0] - 1)) // 2
        else:
            padding = 0 if module.padding == "valid" else module.padding[0]
        return module.kernel_size[0], module.stride[0], padding, module.dilation[0]
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = pair(module.kernel_size, "kernel_size")[0]
        stride = pair(module.stride or module.kernel_size, "stride")[0]
        dilation = pair(getattr(module, "dilation", 1), "dilation")[0]
        return kernel, stride, pair(module.padding, "padding")[0], dilation
    return None


def _through(field: Field, geometry: tuple[int, int, int, int]) -> Field:
    kernel, stride, padding, dilation = geometry
    extent = dilation * (kernel - 1) + 1
    return Field(field.start - padding * field.jump, field.size + (extent - 1) * field.jump, field.jump * stride)


def _union(fields: list[Field]) -> Field:
    start = min(f.start for f in fields)
    end = max(f.start + f.size for f in fields)
    return Field(start, end - start, max(f.jump for f in fields))


def _walk(module: nn.Module, name: str, field: Field, out: dict[str, Field]) -> Field:
    geometry = _geometry(module)
    if geometry is not None:
        field = _through(field, geometry)
        out[name] = field
        return field
    children = dict(module.named_children())
    paths = BRANCHES.get(type(module).__name__)
    if paths is not None:
        ends = [field]  # the identity path (a residual unit's input; inside every other path in Inception)
        for path in paths:
            if all(children.get(child) is not None for child in path):
                ends.append(_chain([(child, children[child]) for child in path], name, field, out))
        field = _union(ends)
    else:
        field = _chain(list(children.items()), name, field, out)
    if name:
        out[name] = field
    return field


def _chain(children: list[tuple[str, nn.Module | None]], prefix: str, field: Field, out: dict[str, Field]) -> Field:
    for child_name, child in children:
        if child is not None:
            field = _walk(child, f"{prefix}.{child_name}" if prefix else child_name, field, out)
    return field


def receptive_fields(model: nn.Module) -> dict[str, Field]:
    """The receptive field of every named module's output, keyed as ``model.named_modules()`` names them.

    Modules after a global pooling or a flatten see the whole input; their entries are meaningless
    and the explorer shows only convolution and pooling layers.
    """
    out: dict[str, Field] = {}
    _walk(model, "", Field(0, 1, 1), out)
    return out
