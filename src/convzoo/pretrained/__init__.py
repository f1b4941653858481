"""Trained runs shipped with the package: the networks a laptop trains in minutes, each with its record.

Each is a complete, small run directory (``model.safetensors``, ``config.json``, ``metrics.jsonl``,
``result.json``) made by the README's command for it on the real Fashion-MNIST, so a learner can
evaluate, predict and read a run before training anything; ``convzoo.api.load(pretrained_dir(NAME))``
opens one. ``tests/test_pretrained.py`` checks that each still scores what its ``result.json`` says.

    lenet          convzoo train lenet --recipe d2l (the book's LeNet, 10 epochs)
    lenet_bn       convzoo train lenet_bn --recipe d2l (the course's BN-LeNet)
    lenet_modern   convzoo train lenet_modern --recipe fast
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

HERE = Path(__file__).resolve().parent


class UnknownPretrainedError(UserError):
    """A name no shipped run has."""


def pretrained_names() -> list[str]:
    """The shipped runs' names, sorted: the folders here that hold a trained model."""
    return sorted(path.parent.name for path in HERE.glob("*/model.safetensors"))


def pretrained_dir(name: str) -> Path:
    """The run directory of the shipped run ``name`` (read it, do not write into it)."""
    names = pretrained_names()
    if name not in names:
        raise UnknownPretrainedError(f"no pretrained run {name!r}; the pretrained runs are: {', '.join(names)}")
    return HERE / name
