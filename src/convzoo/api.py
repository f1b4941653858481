"""The whole loop from Python: see a recipe, plan, train, load a run, predict, evaluate.

    from convzoo import api
    api.recipes("lenet")                                    # {"d2l": {...}, "fast": {...}}
    api.plan("alexnet", resize=96, limit_train=10_000)      # what a run would cost (a Plan; prints as a table)
    run = api.train("lenet_modern", recipe="fast", out="runs/lm")   # a Run, its .model the trained network
    run = api.load("runs/lm")                               # a finished run from its directory
    run.predict(["shoe.jpg", "photos/", tensor_or_pil])     # one Prediction per image
    run.evaluate()                                          # an Evaluation on the run's test images
    run.config, run.history, run.result, run.model

The command line is a shell over the same functions, and the errors they raise tell a command-
line user which flag to change. The functions here re-raise every ``UserError`` (and the
interruption of a run) with its message in Python's terms: ``--overwrite`` becomes ``overwrite=True``,
``--lr 0.09`` becomes ``lr=0.09``, ``convzoo train --resume DIR`` becomes ``train(out=DIR,
resume=True)`` (``python_terms``). Warnings and notes printed during a run are translated too.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .config import RECIPES, TrainConfig, recipe_fields, resume_changes
from .config import recipe as resolve_recipe
from .errors import ConfigError, RunInterrupted, UserError
from .estimate import Plan, plan_run
from .evaluate import Evaluation
from .images import as_pixels
from .predict import Prediction, classify, find_images
from .progress import Progress, progress_for
from .rundir import evaluate_model, evaluation_split, load_run, read_metrics, read_result, read_run_config
from .train import fit

F = TypeVar("F", bound=Callable[..., Any])

_SWITCHES = {f.name for f in fields(TrainConfig) if str(f.type).startswith("bool")} | {"overwrite", "resume"}
# The words a flag takes as its value (other words after a flag are the sentence going on: "--lr must be").
_WORDS = {f.name: set(f.metadata["choices"]) for f in fields(TrainConfig) if f.metadata.get("choices")} | {
    "recipe": set(RECIPES), "format": {"onnx", "torchscript"}}
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_NUMBER = re.compile(r"[-+]?\d[\d_]*(\.\d*)?(e[-+]?\d+)?")
_RESUME = re.compile(r"'?convzoo train --resume ('[^']*'|[^\s']+)((?: --[a-z][a-z0-9-]*(?: [^\s'-]+)?)*)'?")


def python_terms(message: str) -> str:
    """A message written for the command line, in terms of Python arguments (``--lr 0.1`` -> ``lr=0.1``)."""
    def resume_call(match: re.Match) -> str:
        more = [_arguments(flag.strip()) for flag in re.findall(r" --[^-]+", match.group(2))]
        return f"train({', '.join([f'out={_quoted(match.group(1))}', 'resume=True', *more])})"

    return _arguments(_RESUME.sub(resume_call, message))


def _quoted(value: str) -> str:
    return repr(value.strip("'"))


def _arguments(text: str) -> str:
    """Each ``--flag [value]`` of ``text`` as ``name=value``, ``name=True`` (a switch) or ``name``."""
    out, pos = [], 0
    for flag in re.finditer(r"--(no-)?([a-z][a-z0-9-]*)", text):
        if flag.start() < pos:
            continue
        out.append(text[pos : flag.start()])
        name, pos = flag.group(2).replace("-", "_"), flag.end()
        following = re.match(r" ('[^']*'|[^\s,;()]+?)(?=[\s,;()]|:?$|:\s)", text[pos:])
        value = following.group(1) if following else ""
        if flag.group(1):
            out.append(f"{name}=False")
            continue
        path = value.startswith("'") or "/" in value
        if name in _SWITCHES:
            out.append(f"{name}=True")  # a switch: the directory after --resume is dropped
        elif _NUMBER.fullmatch(value):
            out.append(f"{name}={value}")
        elif path or value in _WORDS.get(name, ()) or (name == "device" and _DEVICE.fullmatch(value)):
            out.append(f"{name}={_quoted(value)}")
        else:
            out.append(name)
            continue
        if name not in _SWITCHES or (name == "resume" and path):
            pos += len(following.group(0)) if following else 0
    out.append(text[pos:])
    return "".join(out)


def _in_python_terms(function: F) -> F:
    """``function`` with the messages of the user errors it raises (and of interruptions) in Python's terms."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (UserError, RunInterrupted) as exc:
            exc.args = (python_terms(str(exc.args[0]) if exc.args else ""), *exc.args[1:])
            raise

    return wrapper  # type: ignore[return-value]


def _print_translated(prefix: str) -> Callable[[str], None]:
    return lambda message: print(f"{prefix}: {python_terms(message)}", file=sys.stderr, flush=True)


@_in_python_terms
def recipes(model: str) -> dict[str, dict[str, object]]:
    """The settings each recipe (``d2l``, the book's; ``fast``) gives ``model``: ``{recipe: {field: value}}``."""
    shown = recipe_fields()
    return {name: {f.name: getattr(config, f.name) for f in fields(config) if f.name in shown}
            for name in RECIPES for config in [resolve_recipe(model, name)]}


@_in_python_terms
def plan(model: str, recipe: str = "d2l", **overrides: Any) -> Plan:
    """What training ``model`` with ``recipe`` and ``overrides`` would cost here, from a few timed steps on
    random data (``convzoo train ... --dry-run``); creates nothing."""
    return plan_run(resolve_recipe(model, recipe, **overrides))


@dataclass
class Run:
    """A trained run: its directory, configuration, network (in evaluation mode) and per-epoch metrics."""

    run_dir: Path
    config: TrainConfig
    model: nn.Module = field(repr=False)
    device: torch.device
    history: list[dict] = field(default_factory=list, repr=False)

    @property
    @_in_python_terms
    def result(self) -> dict:
        """``result.json``: test accuracy, training time, epochs, per-class accuracy."""
        return read_result(self.run_dir)

    @property
    def test_acc(self) -> float:
        return self.history[-1]["test_acc"]

    @classmethod
    def open(cls, run_dir: str | Path, device: str = "auto") -> Run:
        """The finished run in ``run_dir`` on ``device``, its errors in the command line's terms (``load`` from
        Python)."""
        config, model, dev = load_run(run_dir, device)
        return cls(Path(run_dir), config, model, dev, read_metrics(run_dir))

    def predict(self, images: Any, *, top_k: int = 3, invert: str = "auto") -> list[Prediction]:
        """Classify ``images``: one ``Prediction`` each (top ``top_k`` classes, probabilities, and whether
        the image is unlike Fashion-MNIST).

        ``images``: a path (a file, a folder of images, a glob such as ``"photos/*.jpg"``), a PIL
        image, a tensor or NumPy array of one image or a batch (any dtype and layout that
        ``convzoo.images.as_pixels`` takes), or a list of these. ``invert``: ``auto`` makes a
        dark object on a light background light on dark, as Fashion-MNIST is; ``yes``; ``no``.
        """
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ConfigError("no images given")
        names, pixels = [], []
        for item in items:
            if isinstance(item, (str, Path)):
                for path in find_images([item]):
                    names.append(str(path))
                    pixels.append(as_pixels(path, invert=invert))
            else:
                batch = as_pixels(item, invert=invert)
                names += [f"image {len(names) + i}" for i in range(len(batch))]
                pixels.append(batch)
        return classify(self.model, self.config, torch.cat(pixels), self.device, names=names, top_k=top_k)

    def evaluate(self, data_dir: str | Path | None = None, *, progress: bool | str | Progress | None = None
                 ) -> Evaluation:
        """Score the model on the test images the run was evaluated on (``.accuracy``, ``.loss``,
        ``.confusion``, ``.per_class_accuracy``, ``.predictions``), showing progress as ``train`` does."""
        config = self.config
        images, labels = evaluation_split(config, None if data_dir is None else str(data_dir))
        view = progress_for(progress)
        view.start(config, 0, 0, len(images))  # no training steps: the view shows the evaluation alone
        try:
            return evaluate_model(config, self.model, images, labels, self.device, progress=view.evaluating)
        finally:
            view.close()


@_in_python_terms
def load(run_dir: str | Path, device: str = "auto") -> Run:
    """A finished run from its directory: config, trained network on ``device``, metrics."""
    return Run.open(run_dir, device)


@_in_python_terms
def train(model: str | None = None, out: str | Path | None = None, *, recipe: str | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool | str | Progress | None = None,
          tensorboard: str | Path | None = None, **overrides: Any) -> Run:
    """Train ``model`` with ``recipe`` (``d2l``, the default, or ``fast``) and ``overrides`` (any
    ``TrainConfig`` field: ``epochs=2``, ``lr=0.1``, ``limit_train=10_000``, ...) into ``out``
    (default ``runs/MODEL-RECIPE-seedN``); returns the finished ``Run`` with the trained network.

    ``resume=True`` continues the interrupted run in ``out`` (``model`` may be left out; only
    ``epochs``, ``lr``, ``device`` and ``data_dir`` may change); ``overwrite=True`` replaces a
    finished one. ``progress``: how the run shows itself (``convzoo.progress.progress_for``: in a
    notebook a live plot); ``tensorboard``: a directory for TensorBoard's scalars.
    """
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"train() got unknown settings {sorted(unknown)}: see convzoo.config.TrainConfig")
    if resume:
        if out is None:
            raise ConfigError("--resume needs the run's directory: give out")
        config = read_run_config(out)["config"]
        if model is not None and model != config.model:
            raise ConfigError(f"{out} is a run of {config.model}, not {model}")
        config = replace(config, **resume_changes(config, {"recipe": recipe, **overrides}))
        config.validate()
    else:
        if model is None:
            raise ConfigError("train needs a model (see 'convzoo models'), or --resume and out")
        config = resolve_recipe(model, recipe or "d2l", **overrides)
    out = Path(out) if out is not None else Path(f"runs/{config.model}-{config.recipe}-seed{config.seed}")
    view = progress_for(progress, note=_print_translated("note"), tensorboard=tensorboard)
    result = fit(config, out, resume=resume, overwrite=overwrite, progress=view,
                 warn=_print_translated("warning"))
    trained = result.model.eval() if result.model is not None else None  # None on the other ranks of torchrun
    device = next(trained.parameters()).device if trained is not None else torch.device("cpu")
    return Run(result.run_dir, config, trained, device, result.history)
