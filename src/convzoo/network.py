"""The network a run's configuration describes, built once for a device: the one way training, planning,
loading a finished run and the benchmarks make a model (nanoGPT's single model-init block).

    build_model(config, device)                     fresh weights: seeded, initialised as ``config.init`` says
    build_model(config, device, weights=path)       a run's trained weights, checked against the configuration

Either way the model is on ``device``, in the memory format the run uses (``channels_last``).
Compiling and wrapping for several processes are training's own (``convzoo.train``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_weights
from .config import TrainConfig
from .models import create_model, init_weights


def build_model(config: TrainConfig, device: torch.device, *, weights: str | Path | None = None,
                num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The network of ``config`` on ``device`` for images of ``in_channels`` channels and ``num_classes`` classes
    (the data's; a run's ``config.json`` records them under ``"model"``): fresh (``torch.manual_seed(config.seed)``,
    then ``config.init``) or with the ``weights`` of a ``model.safetensors``, whose model must be the same."""
    shape = {"num_classes": num_classes, "in_channels": in_channels}
    if weights is None:
        torch.manual_seed(config.seed)
        model = create_model(config.model, backend=config.backend, input_size=config.input_size, **shape)
        init_weights(model, config.init)
    else:
        with torch.device("meta"):  # no memory until the file's tensors are assigned
            model = create_model(config.model, backend=config.backend, input_size=config.input_size, **shape)
        load_weights(weights, model)
        model.eval()
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return model
