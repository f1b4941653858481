"""A run directory read back: its configuration resolved for training, or its trained model for a device."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import saved_epoch
from ..config import RENAMED, TrainConfig, resume_changes
from ..config import recipe as recipe_config
from ..data import data_name
from ..errors import ConfigError, RunFileError
from ..network import build_model
from ..runtime import resolve_device
from ..terms import continue_command, either, option, quoted, setting
from .config_file import read_run_config
from .layout import CHECKPOINT, CONFIG, MODEL


def resolve_run(model: str | None = None, out: str | Path | None = None, *, recipe: str | None = None,
                resume: bool = False, overwrite: bool = False, **given: object) -> tuple[TrainConfig, Path]:
    """The configuration of the run to train and its directory, from what a front door was given.

    A new run: ``recipe`` (default ``d2l``) for ``model``, with the ``given`` settings that are not
    None; its directory ``out`` or ``runs/MODEL-RECIPE-seedN``. A resumed run: the configuration in
    ``out``'s ``config.json`` with the changes ``--resume`` allows (``config.resume_changes``).
    """
    given = {RENAMED.get(name, name): value for name, value in given.items()}
    if isinstance(given.get("data"), str) and given["data"].strip():
        given["data"] = data_name(given["data"])  # a folder recorded by its absolute path
    unknown = set(given) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}: see convzoo.config.TrainConfig")
    for name, value in (("out", out), ("model", model)):
        if isinstance(value, (str, Path)) and not str(value).strip():
            named = either("--resume" if resume else "--out", "out") if name == "out" else option(name)
            raise ConfigError(f"{named} must not be empty", field=name)  # the command line's --resume is out
    if not resume:
        if model is None:
            raise ConfigError(either("train needs a MODEL (see 'convzoo models') or --resume RUN_DIR",
                                     "train needs a model (see convzoo.models.list_models()), or resume=True "
                                     "and out"), field="model")
        config = recipe_config(model, recipe or "d2l", **given)
        return config, Path(out) if out is not None else Path(f"runs/{config.model}-{config.recipe}-seed{config.seed}")
    if out is None:
        raise ConfigError(f"{setting('resume', True)} needs the run's directory: give out", field="out")
    if overwrite:
        raise ConfigError(f"{setting('overwrite', True)} replaces a run and {setting('resume', True)} continues one: "
                          "give one of them", field="overwrite")
    config = read_run_config(out)["config"]
    if model is not None and model != config.model:
        raise ConfigError(f"{out} is a run of {config.model}, not {model}", field="model")
    config = replace(config, **resume_changes(config, {"recipe": recipe, **given}))
    config.validate()
    return config, Path(out)


def resumed_epochs(run_dir: str | Path) -> int:
    """The epochs a run directory's checkpoint holds (0 without one)."""
    return saved_epoch(Path(run_dir) / CHECKPOINT) or 0


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[TrainConfig, nn.Module, torch.device]:
    """The config and trained model of a run directory, on ``device``, prepared as in training (evaluation mode).

    The weights must be those of the run's configuration: a ``model.safetensors`` of another model or
    input size (a file copied from another run) is refused rather than evaluated as if it were this run.
    """
    meta = read_run_config(run_dir)
    config, dev = meta["config"], resolve_device(device)
    path = Path(run_dir) / MODEL
    if not path.is_file():
        raise RunFileError(f"{run_dir} has no model.safetensors: the run has not finished "
                           f"(continue it with {quoted(continue_command(run_dir))})")
    shape = {key: meta["model"][key] for key in ("num_classes", "in_channels") if key in meta["model"]}
    return config, build_model(config, dev, weights=path, **shape), dev


def resume_hint(run_dir: Path | None, **changes: object) -> str:
    """What the run directory keeps and the call that continues it (with ``changes``, e.g. a lower ``lr``)."""
    if run_dir is None or not (run_dir / CONFIG).is_file():
        return "nothing was written"
    epochs = resumed_epochs(run_dir)
    if epochs == 0:  # a run directory this run created is removed when it fails before its first epoch
        return "no epoch was completed, so nothing was kept"
    return (f"{run_dir} keeps {epochs} completed epoch{'s' if epochs != 1 else ''}; "
            f"continue with: {continue_command(run_dir, **changes)}")
