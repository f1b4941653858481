"""What a network learned: the kernels of a conv layer and the feature maps it computes for an image.

``conv_layers`` finds every ``nn.Conv2d`` (from-scratch ones included), so the same figures work
for every model of the zoo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..data import CLASSES, to_input
from ..errors import RunFileError
from ..escape import plot_text
from .base import place_axes, text_width, tile_grid

KERNEL_CMAP = "RdBu_r"  # diverging: negative weights blue, positive red, zero white
FEATURE_CMAP = "viridis"


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every ``nn.Conv2d`` of ``model`` (from-scratch ones included) by qualified name, in definition order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}


def _conv_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Conv2d]:
    convs = conv_layers(model)
    if not convs:
        raise RunFileError(f"{model.config['name']} has no convolution layer")
    if layer is None:
        return next(iter(convs.items()))
    if layer not in convs:
        names = list(convs)
        listed = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise RunFileError(f"no conv layer named {layer!r} in {model.config['name']}; its conv layers: {listed}")
    return layer, convs[layer]


def _describe(name: str, conv: nn.Conv2d) -> str:
    kh, kw = conv.kernel_size
    return f"layer {name} (Conv2d {conv.in_channels}\u2192{conv.out_channels}, {kh}\u00d7{kw})"


def kernels_figure(weight: torch.Tensor, *, title: str = "", max_inputs: int = 8, max_outputs: int = 32) -> Figure:
    """Kernels ``(C_out, C_in, kh, kw)`` as a grid of tiles on one diverging colour scale centred at 0.

    With 2 to ``max_inputs`` input channels there is one tile per (input, output) pair, a row per
    input channel; otherwise one tile per output channel, averaged over the input channels. At most
    ``max_outputs`` output channels are drawn (the first ones). The tiles are one mosaic image
    (``base.tile_grid``) with a colour bar.
    """
    w = weight.detach().float().cpu()
    c_out, c_in, kh, kw = w.shape
    pairs = 1 < c_in <= max_inputs
    shown = min(c_out, max_outputs if pairs else 2 * max_outputs)
    if pairs:
        tiles = w[:shown].transpose(0, 1)  # (C_in, shown, kh, kw): a row per input channel
        rows, cols = c_in, shown
        note = ""
    else:
        cols = min(shown, 8)
        rows = math.ceil(shown / cols)
        tiles = torch.full((rows * cols, kh, kw), float("nan"))
        tiles[:shown] = w[:shown].mean(dim=1)
        tiles = tiles.view(rows, cols, kh, kw)
        note = f"mean over {c_in} input channels" if c_in > 1 else ""
    if shown < c_out:
        note = ", ".join(filter(None, [note, f"first {shown} of {c_out} output channels"]))
    tiles = tiles.numpy()
    limit = float(np.nanmax(np.abs(tiles))) or 1.0
    heading = plot_text(title) + (f"\n({note})" if note else "")

    # Inches. Tile numbers (7 pt) go above every tile, or above the first row and left of each row
    # for (input, output) pairs; the axis labels (9 pt) below and on the left; the colour bar right.
    label = 0.16
    top = 0.12 + 0.2 * (heading.count("\n") + 1) + label
    grid = tile_grid(
        tiles, tile_inches=(0.75 if cols <= 8 else 0.55) if max(kh, kw) > 1 else 0.4,
        gap=(0.08 if pairs else 0.08 + label, 0.08), margins=(0.5 if pairs else 0.2, 0.35, 1.25, top),
        cmap=KERNEL_CMAP, vmin=-limit, vmax=limit, frame="black",
        min_size=(max(4.8, *(text_width(line, 10) + 0.3 for line in heading.splitlines())), 0.35 + 1.5 + top),
    )
    if pairs:
        for c in range(cols):
            grid.above(0, c, str(c), fontsize=7)
        for r in range(rows):
            grid.left(r, str(r), fontsize=7)
    else:
        for n in range(shown):
            grid.above(*divmod(n, cols), str(n), fontsize=7)
    fig = grid.fig
    fig_w, fig_h = fig.get_size_inches()
    left, bottom, width, height = grid.box
    bar = max(1.5, height * min(1.0, 3.0 / rows + 0.3))
    fig.colorbar(grid.image, cax=place_axes(fig, left + width + 0.25, bottom + (height - bar) / 2, 0.15, bar),
                 label="weight")
    fig.supxlabel("output channel" if pairs else "tile number = output channel", fontsize=9, y=0.06 / fig_h)
    if pairs:
        fig.supylabel("input channel", fontsize=9, x=0.06 / fig_w)
    fig.suptitle(heading, fontsize=10, y=1 - 0.1 / fig_h)
    return fig


def layer_kernels_figure(model: nn.Module, layer: str | None = None) -> Figure:
    """``kernels_figure`` of ``model``'s conv layer named ``layer`` (default: the first), titled with its shape."""
    name, conv = _conv_layer(model, layer)
    return kernels_figure(conv.weight, title=f"{model.config['name']}: kernels of {_describe(name, conv)}")


# --- feature maps -----------------------------------------------------------------------------

@torch.no_grad()
def features_figure(
    model: nn.Module, image: torch.Tensor, input_size: int, *, channels: int = 8, max_layers: int = 10,
    title: str = "", classes: Sequence[str] = CLASSES,
) -> Figure:
    """Feature maps for one uint8 ``(H, W)`` image: the first ``channels`` outputs of each conv layer; the top
    classes named by ``classes`` (default: Fashion-MNIST's).

    A forward hook on every ``nn.Conv2d`` records its output (before the activation). Networks with
    more than ``max_layers`` conv layers show that many, evenly spaced from the first to the last.
    Each row shares one colour scale, with its colour bar.
    """
    convs = conv_layers(model)
    outputs: dict[str, torch.Tensor] = {}

    def record(name: str):
        return lambda _module, _args, out: outputs.__setitem__(name, out[0].float().cpu())

    handles = [conv.register_forward_hook(record(name)) for name, conv in convs.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        probs = torch.softmax(model(to_input(image[None].to(device), input_size)).float(), dim=1)[0].cpu()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    names = list(convs)
    if len(names) > max_layers:
        picks = sorted(set(np.linspace(0, len(names) - 1, max_layers).round().astype(int).tolist()))
        names = [names[i] for i in picks]

    fig = Figure(figsize=(channels * 1.05 + 1.5, 1.45 * (len(names) + 1) + 0.5), layout="constrained")
    top, *rows = fig.subfigures(len(names) + 1, 1)
    ax_in, ax_text = top.subplots(1, 2, width_ratios=[1, channels - 1])
    ax_in.imshow(image.cpu().numpy(), cmap="gray", vmin=0, vmax=255)
    ax_in.set_axis_off()
    h, w = image.shape
    resized = f"\nresized to {input_size}\u00d7{input_size}" if (h, w) != (input_size, input_size) else ""
    ax_in.set_title(f"input {h}\u00d7{w}{resized}", fontsize=8)
    best = probs.topk(min(3, len(probs)))
    lines = [f"{plot_text(classes[int(i)])}: {float(p):.1%}" for p, i in zip(best.values, best.indices)]
    ax_text.set_axis_off()
    ax_text.text(0.02, 0.5, "network's top classes\n" + "\n".join(lines), va="center", fontsize=9)
    for sub, name in zip(rows, names):
        maps = outputs[name][:channels].numpy()
        conv = convs[name]
        axes = sub.subplots(1, channels, squeeze=False)[0]
        low, high = float(maps.min()), float(maps.max())
        image_artist = None
        for c, ax in enumerate(axes):
            ax.set_axis_off()
            if c < len(maps):
                image_artist = ax.imshow(maps[c], cmap=FEATURE_CMAP, vmin=low, vmax=high)
                ax.set_title(f"ch {c}", fontsize=7, pad=2)
        sub.colorbar(image_artist, ax=axes, shrink=0.9, aspect=12)
        c_out, h, w = outputs[name].shape
        sub.suptitle(f"{plot_text(_describe(name, conv))}: output {c_out}\u00d7{h}\u00d7{w}", fontsize=8, x=0.02,
                     ha="left")
    shown = f"{len(names)} of {len(convs)} conv layers" if len(names) < len(convs) else f"{len(convs)} conv layers"
    fig.suptitle(f"{plot_text(title)}\nfirst {channels} channels after each conv (before its activation), {shown}",
                 fontsize=10)
    return fig
