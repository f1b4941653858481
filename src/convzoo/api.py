"""The whole loop from Python: see a recipe, plan, train, load a run, predict, evaluate.

    from convzoo import api
    api.recipes("lenet")                                    # {"d2l": {...}, "fast": {...}}
    api.plan("alexnet", input_size=96, limit_train=10_000)  # what a run would cost (a Plan; prints as a table)
    run = api.train("lenet_modern", recipe="fast", out="runs/lm")   # a Run, its .model the trained network
    run = api.load("runs/lm")                               # a finished run from its directory
    run = api.load_pretrained("lenet")                      # one shipped with convzoo
    run.predict(["shoe.jpg", "photos/", tensor_or_pil])     # one Prediction per image
    run.evaluate()                                          # an Evaluation on the run's test images
    run.config, run.history, run.result, run.model

The command line is a shell over these same functions (``convzoo.cli``). Every message they raise,
warn or print names settings in Python's terms (``lr=0.09``, ``resume=True``): each message is built
with ``convzoo.terms`` in the words of the door it is said through, and these functions are the Python door.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from .config import RECIPES, recipe_fields
from .config import recipe as resolve_recipe
from .estimate import Plan, plan_run
from .pretrained import pretrained_dir
from .progress import Progress, progress_for
from .run import Run
from .rundir import resolve_run, resumed_epochs
from .terms import python_door
from .train import fit

__all__ = ["Run", "load", "load_pretrained", "plan", "recipes", "train"]


@python_door
def recipes(model: str) -> dict[str, dict[str, object]]:
    """The settings each recipe (``d2l``, the book's; ``fast``) gives ``model``: ``{recipe: {field: value}}``."""
    shown = recipe_fields()
    return {name: {f.name: getattr(config, f.name) for f in fields(config) if f.name in shown}
            for name in RECIPES for config in [resolve_recipe(model, name)]}


@python_door
def plan(model: str | None = None, out: str | Path | None = None, *, recipe: str | None = None, resume: bool = False,
         **overrides: Any) -> Plan:
    """What training ``model`` with ``recipe`` and ``overrides`` (or resuming ``out``) would cost here, from a few
    timed steps on random data (``convzoo train ... --dry-run``); creates nothing."""
    config, run_dir = resolve_run(model, out, recipe=recipe, resume=resume, **overrides)
    return plan_run(config, done_epochs=resumed_epochs(run_dir) if resume else 0, run_dir=run_dir)


@python_door
def load(run_dir: str | Path, device: str = "auto") -> Run:
    """A finished run from its directory: config, trained network on ``device``, metrics."""
    return Run.open(run_dir, device)


@python_door
def load_pretrained(name: str, device: str = "auto") -> Run:
    """A trained run shipped with convzoo (``convzoo.pretrained.pretrained_names()``: the networks a laptop trains in
    minutes), to predict and explore before training anything."""
    return Run.open(pretrained_dir(name), device)


@python_door
def train(model: str | None = None, out: str | Path | None = None, *, recipe: str | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool | str | Progress | None = None,
          tensorboard: str | Path | bool | None = None, log: Callable[[str], None] = print, command: str | None = None,
          **overrides: Any) -> Run:
    """Train ``model`` with ``recipe`` (``d2l``, the default, or ``fast``) and ``overrides`` (any
    ``TrainConfig`` field: ``epochs=2``, ``lr=0.1``, ``limit_train=10_000``, ...) into ``out``
    (default ``runs/MODEL-RECIPE-seedN``); returns the finished ``Run`` with the trained network.

    ``resume=True`` continues the interrupted run in ``out`` (``model`` may be left out; only
    ``epochs``, ``lr``, ``device`` and ``data_dir`` may change); ``overwrite=True`` replaces a
    finished one. ``progress``: how the run shows itself (``convzoo.progress.progress_for``: in a
    notebook a live plot); ``tensorboard``: a directory for TensorBoard's scalars (``True``:
    ``tensorboard/RUN_NAME`` next to the run directory); ``log``: what
    gets each epoch's line; ``command``: what ``config.json`` records as the command.
    """
    config, run_dir = resolve_run(model, out, recipe=recipe, resume=resume, overwrite=overwrite, **overrides)
    if tensorboard is True:
        tensorboard = run_dir.parent / "tensorboard" / run_dir.name
    view = progress_for(progress, tensorboard=tensorboard or None)
    return fit(config, run_dir, resume=resume, overwrite=overwrite, progress=view, log=log, command=command)
