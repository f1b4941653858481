"""Every choice a training run makes (``TrainConfig``) and the named recipes that fill it.

Each field of ``TrainConfig`` carries its command-line help and whether ``--resume`` may change
it (``option``): the ``train`` command's flags are generated from these fields, so a new option
is one new field. ``recipe(model, name, **overrides)`` resolves a recipe for a model;
``TrainConfig.validate`` refuses values that cannot work, naming the flag.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from . import terms
from .errors import ConfigError
from .models import INITS, UnknownModelError, get_model_spec

# The book's recipe per model (d2l-zh 2.0 `train_ch6`): (learning rate, batch size, input side).
# Plain SGD, cross-entropy, Xavier-uniform weights, 10 epochs, pixels / 255.
BOOK_RECIPES: dict[str, tuple[float, int, int]] = {
    "lenet": (0.9, 256, 28),
    "lenet_bn": (1.0, 256, 28),
    "alexnet": (0.01, 128, 224),
    "vgg11": (0.05, 128, 224),
    "vgg11_small": (0.05, 128, 224),
    "nin": (0.1, 128, 224),
    "googlenet": (0.1, 128, 96),
    "resnet18": (0.05, 256, 96),
}

# The modern recipe: SGD + Nesterov momentum 0.9, weight decay 5e-4, a one-cycle schedule, label
# smoothing 0.1, bfloat16 autocast, flip/crop augmentation, 10 epochs, PyTorch's initialisation;
# per model, what differs from that. Augmentation pays only in longer runs (lenet_modern's 4
# epochs end 1 point higher without it); VGG has no batch norm and, with PyTorch's default
# weights, stays at chance (measured at 64x64 on a GPU and 32x32 on the CPU): He init trains it.
FAST_COMMON: dict[str, object] = {
    "epochs": 10, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.1,
    "augment": True, "tta": True, "init": "default", "amp": True,
}
FAST_RECIPES: dict[str, dict[str, object]] = {
    "lenet": {"lr": 0.1, "batch_size": 256, "input_size": 28},
    "lenet_bn": {"lr": 0.2, "batch_size": 256, "input_size": 28},
    "lenet_modern": {"lr": 0.2, "batch_size": 256, "input_size": 28, "epochs": 4, "augment": False, "tta": False},
    "alexnet": {"lr": 0.02, "batch_size": 128, "input_size": 96},
    "vgg11": {"lr": 0.02, "batch_size": 128, "input_size": 96, "init": "kaiming"},
    "vgg11_small": {"lr": 0.03, "batch_size": 128, "input_size": 96, "init": "kaiming"},
    "nin": {"lr": 0.05, "batch_size": 128, "input_size": 96},
    "googlenet": {"lr": 0.05, "batch_size": 128, "input_size": 96},
    "resnet18": {"lr": 0.1, "batch_size": 256, "input_size": 64},
}

# The fast recipes measured at full length to reach their figure (README, Results); the others are starting points.
VERIFIED_FAST = {"lenet_modern": "0.921 +- 0.002 test accuracy in 4 epochs on 2 CPU cores",
                 "resnet18": "0.93 test accuracy in 6 epochs on one H200"}

RECIPES = ("d2l", "fast")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "onecycle", "cosine")
BACKENDS = ("torch", "scratch")


def option(default: Any, help: str, *, resume: bool = False, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, flag: bool = True) -> Any:
    """A ``TrainConfig`` field with its command-line help; ``resume``: ``--resume`` may change it.

    ``flag=False`` keeps a field off the ``train`` command's generated flags (the model is a
    positional argument, the recipe a flag of its own).
    """
    return field(default=default, metadata={"help": help, "resume": resume, "choices": choices,
                                            "metavar": metavar, "flag": flag})


@dataclass
class TrainConfig:
    """Every choice a run makes. ``recipe()`` fills it from a named recipe plus overrides."""

    model: str = option("lenet", "a name from 'convzoo models'", flag=False)
    recipe: str = option("d2l", "d2l (the book's) or fast", flag=False)
    epochs: int = option(10, "passes over the training set", resume=True)
    batch_size: int = option(256, "images per training step (the global batch under torchrun)")
    lr: float = option(0.9, "learning rate (the peak rate of a schedule)", resume=True)
    optimizer: str = option("sgd", "sgd (Nesterov when --momentum > 0) or adamw", choices=OPTIMIZERS)
    momentum: float = option(0.0, "SGD momentum")
    weight_decay: float = option(0.0, "L2 weight decay")
    schedule: str = option("constant", "learning-rate schedule over the run", choices=SCHEDULES)
    label_smoothing: float = option(0.0, "cross-entropy label smoothing, in [0, 1)")
    augment: bool = option(False, "random flips and 2-pixel shifts of the training images")
    tta: bool = option(False, "test-time augmentation: score each test image and its mirror image, average the "
                              "logits")
    init: str = option("xavier", "weights: xavier (the book's), kaiming (He, deep ReLU nets) or default "
                                 "(PyTorch's)", choices=INITS)
    input_size: int = option(28, "side of the square images the network takes, the data resized to it (alias "
                                 "--resize)")
    seed: int = option(0, "random seed: weights, batch order, augmentation")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", resume=True)
    backend: str = option("torch", "torch.nn layers or convzoo's from-scratch ops", choices=BACKENDS)
    channels_last: bool = option(True, "NHWC activations: the fast convolution path on CPU and GPU")
    amp: bool = option(False, "bfloat16 autocast for the forward pass (weights and optimizer stay float32)")
    compile: bool = option(False, "torch.compile the model (pays off only when a run is long enough)")
    cuda_graphs: bool | None = option(None, "on CUDA, record the training step once as a CUDA graph and replay it "
                                            "(default: on in one process without --compile)")
    autotune: bool = option(True, "on CUDA, time cuDNN's algorithms on the first batch of each shape and keep "
                                  "the fastest (off saves seconds of start-up in short runs of many-layer networks)")
    limit_train: int | None = option(None, "train on the first N images", metavar="N")
    limit_test: int | None = option(None, "evaluate on the first N images", metavar="N")
    data: str | None = option(None, "the data set: fashion-mnist (the default), mnist, kmnist, cifar10, a folder of "
                                    "IDX files or a folder of images by class (DIR/<class>/... or "
                                    "DIR/train/<class>/... with DIR/test/...); docs/data.md", metavar="DATA")
    grayscale: bool = option(False, "convert colour images to one channel (luma)")
    data_size: int | None = option(None, "decode every image of a folder to N x N pixels (default: its most common "
                                         "size; a published set keeps its own), before --input-size resizes it for "
                                         "the network", metavar="N")
    test_fraction: float = option(0.2, "the share of each class held out for testing when a folder of images has no "
                                       "train/ and test/ folders", metavar="F")
    val_fraction: float = option(0.0, "hold out this share of each class of the training set as a validation split, "
                                      "score each epoch on it and the test set once at the end (default 0: each "
                                      "epoch is scored on the test set, as the book does)", metavar="F")
    data_dir: str | None = option(None, "where the data's files are: a published set's folder (default: the cache; "
                                        "for Fashion-MNIST, found as before), or a --data folder moved since the run "
                                        "was trained", resume=True, metavar="DIR")
    eval_batch_size: int = option(1000, "images per evaluation batch", resume=True)
    deterministic: bool = option(False, "deterministic kernels and a fixed thread count: a resumed run ends with the "
                                        "weights of an uninterrupted one (bitwise on the CPU); can be slower")
    threads: int | None = option(None, "CPU threads (default: PyTorch's); --deterministic records the count used")

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the setting of the first value that cannot work (or is of another type)."""
        for name, text in type_problems(self) or self.problems():
            raise ConfigError(f"{terms.option(name)} {text}", field=name)

    def problems(self) -> list[tuple[str, str]]:
        """``(field, what is wrong)`` for each value of the right type that cannot work."""
        try:
            get_model_spec(self.model)
            unknown = ""
        except UnknownModelError as exc:  # a config.json naming a model this convzoo lacks: its key is named
            unknown = str(exc)
        checks = [
            ("model", not unknown, f"must be a name from the zoo: {unknown}"),
            ("recipe", self.recipe in RECIPES, f"must be d2l or fast, got {self.recipe!r}"),
            ("epochs", self.epochs >= 1, f"must be at least 1, got {self.epochs}"),
            ("batch_size", self.batch_size >= 1, f"must be at least 1, got {self.batch_size}"),
            ("lr", _finite(self.lr) and self.lr > 0, f"must be a positive number, got {self.lr}"),
            ("optimizer", self.optimizer in OPTIMIZERS,
             f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            ("momentum", _finite(self.momentum) and self.momentum >= 0, f"must be >= 0, got {self.momentum}"),
            ("weight_decay", _finite(self.weight_decay) and self.weight_decay >= 0,
             f"must be >= 0, got {self.weight_decay}"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, f"must be in [0, 1), got {self.label_smoothing}"),
            ("init", self.init in INITS, f"must be one of {', '.join(INITS)}, got {self.init!r}"),
            ("input_size", self.input_size >= 1, f"must be a positive side length, got {self.input_size}"),
            ("limit_train", self.limit_train is None or self.limit_train >= 1, f"must be >= 1, got {self.limit_train}"),
            ("limit_test", self.limit_test is None or self.limit_test >= 1, f"must be >= 1, got {self.limit_test}"),
            ("eval_batch_size", self.eval_batch_size >= 1, f"must be >= 1, got {self.eval_batch_size}"),
            ("backend", self.backend in BACKENDS, f"must be torch or scratch, got {self.backend!r}"),
            ("threads", self.threads is None or self.threads >= 1, f"must be >= 1, got {self.threads}"),
            ("data", self.data is None or bool(self.data.strip()), "must not be empty"),
            ("data_size", self.data_size is None or self.data_size >= 1,
             f"must be a positive number of pixels, got {self.data_size}"),
            ("test_fraction", math.isfinite(self.test_fraction) and 0 < self.test_fraction < 1,
             f"must be between 0 and 1 (exclusive), got {self.test_fraction}"),
            ("val_fraction", math.isfinite(self.val_fraction) and 0 <= self.val_fraction < 1,
             f"must be at least 0 and below 1, got {self.val_fraction}"),
            *self._limits(),
        ]
        return [(name, text) for name, ok, text in checks if not ok]

    def _limits(self) -> list[tuple[str, bool, str]]:
        """The largest values that work: past them a number overflows float32 or int64, or nothing can run."""
        largest = {"epochs": MAX_EPOCHS, "batch_size": MAX_COUNT, "eval_batch_size": MAX_COUNT,
                   "input_size": MAX_SIDE, "data_size": MAX_SIDE, "threads": MAX_THREADS, "limit_train": MAX_COUNT,
                   "limit_test": MAX_COUNT}
        checks = [(name, False, f"must be at most {most:,}, got {getattr(self, name):,}")
                  for name, most in largest.items() if getattr(self, name) is not None and getattr(self, name) > most]
        checks.append(("seed", abs(self.seed) <= MAX_SEED, f"must be between -2**62 and 2**62, got {self.seed}"))
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            checks.append((name, not _finite(value) or value <= FLOAT32_MAX,
                           f"must be at most {FLOAT32_MAX:.4g} (the largest float32), got {value}"))
        return checks


# The largest values that work (see ``TrainConfig._limits``).
MAX_EPOCHS = 1_000_000  # more would be years of training; the step count stays far inside int64
MAX_COUNT = 1 << 31  # images: more than the data set holds, below int32 indexing limits
MAX_SIDE = 8192  # pixels: an 8192x8192 input already needs GiBs per image in the first layer
MAX_THREADS = 1024
MAX_SEED = 1 << 62  # the batch order's generator takes seed + epoch as a 64-bit integer
FLOAT32_MAX = 3.4028234663852886e38  # the learning rate lives in a float32 tensor on CUDA


def _finite(value: float) -> bool:
    """Whether a number is finite: an integer always is (``math.isfinite`` of one past a float's range overflows)."""
    return isinstance(value, int) or math.isfinite(value)


def flag_name(name: str) -> str:
    """The command-line flag of a ``TrainConfig`` field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option_fields() -> list[Field]:
    """The ``TrainConfig`` fields that are ``train`` flags, in declaration order."""
    return [f for f in fields(TrainConfig) if f.metadata["flag"]]


def resumable() -> tuple[str, ...]:
    """The fields ``--resume`` may change: the run's length, its learning rate and where it runs."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata["resume"])


def recipe_fields() -> set[str]:
    """The fields some recipe sets (for some model); the others always take ``TrainConfig``'s default."""
    per_model = {name for values in FAST_RECIPES.values() for name in values}
    return {"lr", "batch_size", "input_size"} | set(FAST_COMMON) | per_model


def recipe_values(model: str, name: str = "d2l") -> dict[str, object]:
    """The fields a recipe sets for ``model`` (the rest keep ``TrainConfig``'s defaults)."""
    spec = get_model_spec(model)
    if name == "d2l":
        lr, batch, size = BOOK_RECIPES.get(model, (0.05, 128, spec.input_size))
        return {"lr": lr, "batch_size": batch, "input_size": size}
    if name == "fast":
        per_model = FAST_RECIPES.get(model, {"lr": 0.05, "batch_size": 128, "input_size": spec.input_size})
        return {**FAST_COMMON, **per_model}
    raise ConfigError(f"{terms.option('recipe')} must be d2l or fast, got {name!r}", field="recipe")


def recipe(model: str, name: str = "d2l", **overrides: object) -> TrainConfig:
    """The named recipe (``d2l`` or ``fast``) for ``model``; ``overrides`` that are not None win."""
    config = TrainConfig(model=model, recipe=name, **recipe_values(model, name))  # type: ignore[arg-type]
    overrides = {RENAMED.get(key, key): value for key, value in overrides.items()}
    unknown = set(overrides) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown TrainConfig fields: {sorted(unknown)}")
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.validate()
    return config


def resume_changes(run: TrainConfig, given: dict[str, object]) -> dict[str, object]:
    """The values of ``given`` (field -> value, None for not given) that change ``run`` on ``--resume``.

    A value equal to the run's own is accepted whatever the field (so a run's command can be
    repeated with ``--resume`` appended); a different value of a field ``--resume`` may not
    change is a ``ConfigError`` that names the setting, the run's value and the new one.
    """
    allowed = resumable()
    changed = {name: value for name, value in given.items() if value is not None and value != getattr(run, name)}
    refused = [name for name in changed if name not in allowed]
    if refused:
        why = "; ".join(f"{terms.option(name)} cannot change (the run's is {getattr(run, name)!r}, given "
                        f"{changed[name]!r})" for name in refused)
        can = ", ".join(terms.option(name) for name in allowed)
        raise ConfigError(f"{terms.setting('resume', True)} continues a run as it was configured: {why}; only {can} "
                          "can", field=refused[0])
    return changed


# The JSON types each field's annotation allows (an int is a float; a bool is never an int).
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
# Fields renamed since: a config.json written before keeps its old names.
RENAMED = {"resize": "input_size"}


def type_problems(config: TrainConfig) -> list[tuple[str, str]]:
    """``(field, what is wrong)`` for each value whose type is not its field's (``epochs=True``, ``lr="0.1"``)."""
    problems = []
    for f in fields(config):
        value, names = getattr(config, f.name), str(f.type).split(" | ")
        allowed = tuple(t for name in names for t in _TYPES[name])
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            kinds = " or ".join({"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False",
                                 "None": "None"}[name] for name in names)
            problems.append((f.name, f"must be {kinds}, got {value!r}"))
    return problems


def config_from_dict(values: object, source: str) -> TrainConfig:
    """A ``TrainConfig`` from a dict read from ``source`` (a config.json: it may have been edited), validated.

    Fields that a run directory written by an older convzoo lacks take their defaults; renamed ones are read
    under their old names.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{source} has no training configuration")
    values = {RENAMED.get(key, key): value for key, value in values.items()}
    try:
        config = TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"{source} has an invalid training configuration ({exc})") from None
    problems = type_problems(config) or config.problems()
    if problems:
        name, text = problems[0]
        raise ConfigError(f"{source} has an invalid training configuration: {name} {text}", field=name)
    return config
