"""TrainConfig, the recipes, and the ``train`` flags generated from the config's fields."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict, fields
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from convzoo.cli import build_parser
from convzoo.cli.train import train_arguments
from convzoo.config import (
    BOOK_RECIPES,
    FAST_RECIPES,
    TrainConfig,
    config_from_dict,
    flag_name,
    option_fields,
    recipe,
    recipe_fields,
    resumable,
    resume_changes,
)
from convzoo.data import data_name
from convzoo.errors import ConfigError
from convzoo.models import list_models
from convzoo.rundir import resolve_run
from convzoo.terms import PYTHON, speaking

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


def train_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, str, bool]:
    """What the ``train`` command resolves its arguments to (the configuration, directory, and whether it resumes)."""
    arguments = train_arguments(args)
    config, run_dir = resolve_run(**arguments)
    return config, str(run_dir), arguments["resume"]


def test_every_field_has_a_flag_and_every_flag_reaches_the_config() -> None:
    """A value given on the command line for each flag arrives in the resolved config."""
    values = {"epochs": 3, "batch_size": 64, "lr": 0.25, "optimizer": "adamw", "momentum": 0.5,
              "weight_decay": 0.001, "schedule": "cosine", "label_smoothing": 0.2, "augment": True, "tta": True,
              "init": "kaiming", "input_size": 32, "seed": 7, "device": "cpu", "backend": "scratch",
              "channels_last": False, "amp": True, "compile": False, "cuda_graphs": False, "autotune": False,
              "limit_train": 100, "limit_test": 50, "data_dir": str(SLICE), "eval_batch_size": 25,
              "deterministic": True, "threads": 1, "data": "mnist", "grayscale": True, "data_size": 32,
              "test_fraction": 0.25, "val_fraction": 0.1}
    flagged = {f.name for f in option_fields()}
    assert flagged == {f.name for f in fields(TrainConfig)} - {"model", "recipe"}
    assert set(values) == flagged, "a new field needs a value in this test"
    argv = ["lenet"]
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else [flag, str(value)]
    config, out, resume = config_from_args(train_args(*argv))
    for name, value in values.items():
        assert getattr(config, name) == value, name
    assert (out, resume) == ("runs/lenet-d2l-seed7", False)


def test_flags_left_out_keep_the_recipe() -> None:
    config, _, _ = config_from_args(train_args("alexnet"))
    assert config == recipe("alexnet")
    assert (config.lr, config.batch_size, config.input_size) == BOOK_RECIPES["alexnet"]
    fast, _, _ = config_from_args(train_args("vgg11_small", "--recipe", "fast"))
    assert fast.lr == FAST_RECIPES["vgg11_small"]["lr"] and fast.init == "kaiming" and fast.amp


def test_help_shows_defaults() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # noqa: SLF001
    assert "(default: the recipe's)" in text and "(default: 1000)" in text and "(default: on)" in text


def test_resume_accepts_the_runs_own_values_and_refuses_others_naming_both() -> None:
    run = recipe("lenet", epochs=2, batch_size=32, seed=3)
    assert resume_changes(run, {"batch_size": 32, "seed": 3, "epochs": 4, "lr": None}) == {"epochs": 4}
    with pytest.raises(ConfigError, match=r"--batch-size cannot change \(the run's is 32, given 64\)"):
        resume_changes(run, {"batch_size": 64})
    assert set(resumable()) == {"epochs", "lr", "device", "data_dir", "eval_batch_size"}


def test_a_runs_command_repeated_with_resume_continues_it(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    command = ["train", "lenet", "--epochs", "1", "--batch-size", "32", "--limit-train", "64", "--limit-test", "32",
               "--seed", "5", "--data-dir", str(SLICE), "--device", "cpu", "--out", str(out)]
    code, _, err = run_cli(*command)
    assert code == 0, err
    command[command.index("--epochs") + 1] = "2"
    code, stdout, err = run_cli(*command, "--resume", str(out))
    assert code == 0, err
    assert "after 2 epochs" in stdout
    code, _, err = run_cli(*command, "--resume", str(out), "--seed", "6")
    assert code == 2 and "--seed cannot change (the run's is 5, given 6)" in err, err
    code, _, err = run_cli("train", "--resume", str(out), "--overwrite")
    assert code == 2 and "give one of them" in err


def test_config_from_dict_fills_fields_an_older_run_lacks_and_refuses_wrong_types() -> None:
    stored = {"model": "lenet", "recipe": "d2l", "epochs": 2}
    assert config_from_dict(stored, "x").eval_batch_size == TrainConfig().eval_batch_size
    with pytest.raises(ConfigError, match="x has an invalid training configuration: epochs must be an integer, got '2"):
        config_from_dict({**stored, "epochs": "2"}, "x")
    assert config_from_dict({**stored, "resize": 32}, "x").input_size == 32  # the name a run of before wrote
    with pytest.raises(ConfigError, match="invalid training configuration"):
        config_from_dict({**stored, "colour": "red"}, "x")


def test_the_command_line_and_recipe_agree_on_the_readme_example() -> None:
    argv = shlex.split("resnet18 --recipe fast --epochs 2 --seed 1")
    config, _, _ = config_from_args(train_args(*argv))
    assert config == recipe("resnet18", "fast", epochs=2, seed=1)


@pytest.mark.parametrize("model", sorted(BOOK_RECIPES))
def test_d2l_recipe_is_the_books(model: str) -> None:
    config = recipe(model)
    lr, batch, size = BOOK_RECIPES[model]
    assert (config.lr, config.batch_size, config.input_size, config.epochs) == (lr, batch, size, 10)
    assert (config.optimizer, config.momentum, config.weight_decay, config.init) == ("sgd", 0.0, 0.0, "xavier")
    assert not config.augment and config.label_smoothing == 0 and config.schedule == "constant"


def test_every_model_has_both_recipes() -> None:
    for model in list_models():
        assert recipe(model, "d2l").model == model
        assert recipe(model, "fast").schedule == "onecycle"


def test_overrides_win_and_none_is_ignored() -> None:
    config = recipe("lenet", epochs=3, lr=None, resize=32)
    assert (config.epochs, config.lr, config.input_size) == (3, 0.9, 32)


@pytest.mark.parametrize("override", [
    {"epochs": 0}, {"batch_size": -1}, {"lr": float("nan")}, {"lr": -0.1}, {"lr": float("inf")},
    {"label_smoothing": 1.0}, {"limit_train": 0}, {"resize": 0},
])
def test_bad_values_are_config_errors(override: dict) -> None:
    with pytest.raises(ConfigError):
        recipe("lenet", **override)


def test_recipes_command_shows_every_setting_a_recipe_makes(run_cli) -> None:
    code, out, err = run_cli("recipes", "alexnet")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["alexnet", "d2l", "fast"]
    assert lines[-1].startswith("  fast: not verified at full length")
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert set(rows) == {flag_name(name) for name in recipe_fields()}
    assert (rows["--lr"], rows["--input-size"], rows["--augment"]) == (["0.01", "0.02"], ["224", "96"], ["off", "on"])
    code, out, err = run_cli("recipes", "--json")
    table = json.loads(out)
    assert (code, list(table)) == (0, list_models())
    for model, recipes in table.items():
        for name, values in recipes.items():
            resolved = recipe(model, name)
            assert set(values) == recipe_fields()
            assert values == {field: getattr(resolved, field) for field in values}
    code, out, err = run_cli("recipes", "lenet5")
    assert code == 2 and "unknown model 'lenet5'" in err


# --- the recipes users train with, value by value --------------------------------------------------
# Written out by hand from ../shared/REFERENCE.md ("The book's training recipes", d2l-zh 2.0
# `train_ch6`), not read from convzoo.config: a changed learning rate, batch or input side fails here.
BOOK = {  # model: (lr, batch size, input side)
    "lenet": (0.9, 256, 28),
    "alexnet": (0.01, 128, 224),
    "vgg11_small": (0.05, 128, 224),  # the book's VGG-11 with a quarter of the channels
    "nin": (0.1, 128, 224),
    "googlenet": (0.1, 128, 96),
    "lenet_bn": (1.0, 256, 28),
    "resnet18": (0.05, 256, 96),
}
# The networks the book does not train: the full VGG-11 takes its small twin's recipe, lenet_modern
# (convzoo's) the defaults of a network without one.
NOT_IN_THE_BOOK = {"vgg11": (0.05, 128, 224), "lenet_modern": (0.05, 128, 28)}


def test_the_book_recipe_table_covers_every_network() -> None:
    assert sorted(BOOK | NOT_IN_THE_BOOK) == sorted(list_models())


@pytest.mark.parametrize("model", sorted(BOOK | NOT_IN_THE_BOOK))
def test_the_d2l_recipe_of_every_network_is_the_books_value_by_value(model: str) -> None:
    lr, batch, side = (BOOK | NOT_IN_THE_BOOK)[model]
    config = recipe(model, "d2l")
    assert (config.model, config.recipe) == (model, "d2l")
    assert config.lr == lr and config.batch_size == batch and config.input_size == side
    # Plain SGD: no momentum, no weight decay, a constant rate; cross-entropy without smoothing.
    assert (config.optimizer, config.momentum, config.weight_decay, config.schedule) == ("sgd", 0.0, 0.0, "constant")
    assert config.label_smoothing == 0.0
    # Xavier init, 10 epochs, pixels / 255 with no augmentation, float32, one pass per test image.
    assert (config.init, config.epochs, config.augment, config.tta, config.amp) == ("xavier", 10, False, False, False)
    assert config.seed == 0


# The two fast recipes the README reports as verified (Results): lenet_modern on the CPU ("SGD-Nesterov
# lr 0.2, one-cycle, label smoothing, bf16", 4 epochs, 28x28) and resnet18 on a GPU (64x64 input).
FAST = {
    "lenet_modern": {"lr": 0.2, "batch_size": 256, "input_size": 28, "epochs": 4, "augment": False, "tta": False},
    "resnet18": {"lr": 0.1, "batch_size": 256, "input_size": 64, "epochs": 10, "augment": True, "tta": True},
}


@pytest.mark.parametrize("model", sorted(FAST))
def test_the_verified_fast_recipes_value_by_value(model: str) -> None:
    config = recipe(model, "fast")
    assert config.recipe == "fast"
    for name, value in FAST[model].items():
        assert getattr(config, name) == value, name
    # SGD with Nesterov momentum 0.9 and weight decay 5e-4, a one-cycle schedule to the peak rate,
    # label smoothing 0.1, bfloat16 autocast, PyTorch's own initialisation.
    assert (config.optimizer, config.momentum, config.weight_decay) == ("sgd", 0.9, 5e-4)
    assert (config.schedule, config.label_smoothing, config.amp, config.init) == ("onecycle", 0.1, True, "default")


# --- arbitrary JSON values per field (issue 23, class 6) ------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
FIELDS = [f.name for f in fields(TrainConfig)]


def _round_trips(config: TrainConfig) -> None:
    """What was accepted is written to config.json and read back as the same configuration."""
    stored = json.loads(json.dumps(asdict(config)))
    assert config_from_dict(stored, "config.json") == config


@example(name="lr", value=10**400)
@example(name="momentum", value=-(10**400))
@example(name="epochs", value=True)
@example(name="model", value="lenet5")
@example(name="seed", value=2.0)
@given(name=st.sampled_from(FIELDS), value=JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_any_json_value_in_config_json_is_refused_naming_its_key_or_round_trips(name: str, value: object) -> None:
    """A hand-edited config.json: each value is refused with one error naming its key, or it round-trips."""
    stored = {**asdict(TrainConfig()), name: value}
    try:
        config = config_from_dict(stored, "runs/x/config.json")
    except ConfigError as error:
        assert error.field == name
        assert str(error).startswith(f"runs/x/config.json has an invalid training configuration: {name} ")
        return
    assert getattr(config, name) == value
    _round_trips(config)


@example(name="epochs", value=True)
@example(name="lr", value="0.1")
@example(name="lr", value=10**400)
@example(name="data", value="0")  # a folder's name: recorded as its absolute path
@given(name=st.sampled_from([f for f in FIELDS if f not in ("model", "recipe")]), value=JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_any_value_the_api_is_given_is_refused_naming_it_or_round_trips(name: str, value: object) -> None:
    """``api.train(NAME=value)`` resolves its configuration with ``resolve_run`` before anything is created:
    refused naming the argument, or accepted as a configuration that config.json gives back unchanged."""
    try:
        with speaking(PYTHON):  # as api.train words its errors
            config, _ = resolve_run("lenet", "unused", **{name: value})
    except ConfigError as error:
        assert error.field == name and str(error).startswith(f"{name} ")
        return
    if name == "data" and isinstance(value, str) and value.strip():
        value = data_name(value)  # a folder is recorded by its absolute path, a named set by its name
    assert value is None or getattr(config, name) == value
    _round_trips(config)


def test_every_option_of_every_command_says_what_it_does() -> None:
    import argparse

    def missing(parser: argparse.ArgumentParser, path: str) -> list[str]:
        found = []
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    found += missing(sub, f"{path} {name}")
            elif not action.help and action.dest != "help":
                found.append(f"{path} {action.option_strings or action.dest}")
        return found

    assert missing(build_parser(), "convzoo") == []
