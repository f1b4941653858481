"""The model registry: builders register under their function name with their native input size."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import UserError


class UnknownModelError(UserError):
    """A model name that is not registered (the message suggests the closest names)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int  # the side of the square input the book trains this model at
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(*, input_size: int) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a keyword-only builder under its function name; a duplicate name is an error."""

    def register(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        positional = [
            p.name for p in inspect.signature(builder).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if positional:
            raise TypeError(f"builder {name!r} must take keyword-only arguments, not {positional}")
        description = (inspect.getdoc(builder) or name).splitlines()[0]
        _REGISTRY[name] = ModelSpec(name, builder, input_size, description)
        return builder

    return register


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The spec of ``name``; an unknown name raises ``UnknownModelError`` with suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def create_model(
    name: str, *, num_classes: int = 10, in_channels: int = 1, backend: str = "torch", **kwargs: object
) -> nn.Module:
    """Build a registered model. ``kwargs`` go to its builder (e.g. ``input_size=96``).

    The returned module carries ``model.config``: the name and every argument needed to build
    it again (what a checkpoint stores).
    """
    spec = get_model_spec(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if in_channels < 1:
        raise UserError(f"in_channels must be at least 1, got {in_channels}")
    kwargs.setdefault("input_size", spec.input_size)
    model = spec.builder(num_classes=num_classes, in_channels=in_channels, backend=backend, **kwargs)
    model.config = {"name": name, "num_classes": num_classes, "in_channels": in_channels, "backend": backend, **kwargs}
    return model


def rebuild(config: dict, **changes: object) -> nn.Module:
    """The model a ``model.config`` describes (e.g. read from a file), with ``changes`` (e.g. ``backend="torch"``)."""
    kwargs = {key: value for key, value in config.items() if key != "name"}
    return create_model(config["name"], **{**kwargs, **changes})
