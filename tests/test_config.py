"""TrainConfig, the recipes, and the ``train`` flags generated from the config's fields."""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict, fields, replace
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


# --- every refusal word for word, at its bound (issue 26) -----------------------------------------------------------
# (override, the message at the command line's door); each value is the first that cannot work.
REFUSED = [
    ({"epochs": 0}, "--epochs must be at least 1, got 0"),
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ({"lr": 0.0}, "--lr must be a positive number, got 0.0"),
    ({"lr": float("nan")}, "--lr must be a positive number, got nan"),
    ({"lr": float("inf")}, "--lr must be a positive number, got inf"),
    ({"optimizer": "adam"}, "--optimizer must be one of sgd, adamw, got 'adam'"),
    ({"schedule": "step"}, "--schedule must be one of constant, onecycle, cosine, got 'step'"),
    ({"momentum": -0.01}, "--momentum must be >= 0, got -0.01"),
    ({"momentum": float("nan")}, "--momentum must be >= 0, got nan"),
    ({"weight_decay": -1e-4}, "--weight-decay must be >= 0, got -0.0001"),
    ({"weight_decay": float("inf")}, "--weight-decay must be >= 0, got inf"),
    ({"label_smoothing": 1.0}, "--label-smoothing must be in [0, 1), got 1.0"),
    ({"label_smoothing": -0.01}, "--label-smoothing must be in [0, 1), got -0.01"),
    ({"init": "he"}, "--init must be one of xavier, kaiming, default, got 'he'"),
    ({"input_size": 0}, "--input-size must be a positive side length, got 0"),
    ({"limit_train": 0}, "--limit-train must be >= 1, got 0"),
    ({"limit_test": 0}, "--limit-test must be >= 1, got 0"),
    ({"eval_batch_size": 0}, "--eval-batch-size must be >= 1, got 0"),
    ({"backend": "numpy"}, "--backend must be torch or scratch, got 'numpy'"),
    ({"threads": 0}, "--threads must be >= 1, got 0"),
    ({"data": " "}, "--data must not be empty"),
    ({"data_size": 0}, "--data-size must be a positive number of pixels, got 0"),
    ({"test_fraction": 0.0}, "--test-fraction must be between 0 and 1 (exclusive), got 0.0"),
    ({"test_fraction": 1.0}, "--test-fraction must be between 0 and 1 (exclusive), got 1.0"),
    ({"test_fraction": float("nan")}, "--test-fraction must be between 0 and 1 (exclusive), got nan"),
    ({"val_fraction": -0.01}, "--val-fraction must be at least 0 and below 1, got -0.01"),
    ({"val_fraction": 1.0}, "--val-fraction must be at least 0 and below 1, got 1.0"),
    ({"val_fraction": float("nan")}, "--val-fraction must be at least 0 and below 1, got nan"),
    ({"recipe": "book"}, "--recipe must be d2l or fast, got 'book'"),
    # the largest values that work, and one past them
    ({"epochs": 1_000_001}, "--epochs must be at most 1,000,000, got 1,000,001"),
    ({"batch_size": 2**31 + 1}, "--batch-size must be at most 2,147,483,648, got 2,147,483,649"),
    ({"eval_batch_size": 2**31 + 1}, "--eval-batch-size must be at most 2,147,483,648, got 2,147,483,649"),
    ({"limit_train": 2**31 + 1}, "--limit-train must be at most 2,147,483,648, got 2,147,483,649"),
    ({"limit_test": 2**31 + 1}, "--limit-test must be at most 2,147,483,648, got 2,147,483,649"),
    ({"input_size": 8193}, "--input-size must be at most 8,192, got 8,193"),
    ({"data_size": 8193}, "--data-size must be at most 8,192, got 8,193"),
    ({"threads": 1025}, "--threads must be at most 1,024, got 1,025"),
    ({"seed": 2**62 + 1}, f"--seed must be between -2**62 and 2**62, got {2**62 + 1}"),
    ({"seed": -(2**62) - 1}, f"--seed must be between -2**62 and 2**62, got {-(2**62) - 1}"),
    ({"lr": 10**39}, f"--lr must be at most 3.403e+38 (the largest float32), got {10**39}"),
    ({"momentum": 1e39}, "--momentum must be at most 3.403e+38 (the largest float32), got 1e+39"),
    ({"weight_decay": 1e39}, "--weight-decay must be at most 3.403e+38 (the largest float32), got 1e+39"),
]


@pytest.mark.parametrize(("override", "message"), REFUSED, ids=[m.split()[0] + " " + m.split()[-1] for _, m in REFUSED])
def test_each_value_that_cannot_work_is_refused_naming_its_flag_and_bound(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        recipe("lenet", **override)
    assert str(error.value) == message
    assert error.value.field == next(iter(override))


def test_a_refusal_in_python_names_the_argument() -> None:
    with speaking(PYTHON), pytest.raises(ConfigError) as error:
        recipe("lenet", batch_size=0)
    assert str(error.value) == "batch_size must be at least 1, got 0"
    with speaking(PYTHON), pytest.raises(ConfigError) as error:
        recipe("lenet", "book")
    assert str(error.value) == "recipe must be d2l or fast, got 'book'"


# The first value that works at each bound, and the largest.
ACCEPTED = [{"epochs": 1}, {"batch_size": 1}, {"lr": 1e-12}, {"momentum": 0.0}, {"weight_decay": 0.0},
            {"label_smoothing": 0.0}, {"label_smoothing": 0.99}, {"input_size": 1}, {"limit_train": 1},
            {"limit_test": 1}, {"eval_batch_size": 1}, {"threads": 1}, {"data_size": 1}, {"test_fraction": 0.01},
            {"test_fraction": 0.99}, {"val_fraction": 0.0}, {"val_fraction": 0.99}, {"epochs": 1_000_000},
            {"batch_size": 2**31}, {"eval_batch_size": 2**31}, {"limit_train": 2**31}, {"limit_test": 2**31},
            {"input_size": 8192}, {"data_size": 8192}, {"threads": 1024}, {"seed": 2**62}, {"seed": -(2**62)},
            {"lr": 3.4028234663852886e38}, {"momentum": 3.4028234663852886e38},
            {"weight_decay": 3.4028234663852886e38}, {"lr": 10**38}, {"data": "mnist"}, {"optimizer": "adamw"},
            {"schedule": "cosine"}, {"init": "default"}, {"backend": "scratch"}]


@pytest.mark.parametrize("override", ACCEPTED, ids=[f"{k}={v}" for o in ACCEPTED for k, v in o.items()])
def test_the_values_at_each_bound_are_accepted(override: dict) -> None:
    config = recipe("lenet", **override)
    (name, value), = override.items()
    assert getattr(config, name) == value
    assert config.problems() == []


def test_a_config_json_naming_a_model_this_convzoo_lacks_is_refused_naming_the_key() -> None:
    stored = {"model": "lenet9", "recipe": "d2l"}
    with pytest.raises(ConfigError) as error:
        config_from_dict(stored, "runs/x/config.json")
    assert str(error.value).startswith("runs/x/config.json has an invalid training configuration: model must be a "
                                       "name from the zoo: unknown model 'lenet9'; did you mean lenet,")
    assert error.value.field == "model"
    assert TrainConfig(model="lenet").problems() == []


def test_a_config_json_that_is_not_a_mapping_or_has_unknown_keys_says_so() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict(["lenet"], "runs/x/config.json")
    assert str(error.value) == "runs/x/config.json has no training configuration"
    with pytest.raises(ConfigError) as error:
        config_from_dict({"model": "lenet", "colour": "red"}, "runs/x/config.json")
    assert str(error.value) == ("runs/x/config.json has an invalid training configuration (TrainConfig.__init__() got "
                                "an unexpected keyword argument 'colour')")
    with pytest.raises(ConfigError) as error:
        config_from_dict({"model": "lenet", "epochs": 0}, "runs/x/config.json")
    assert str(error.value) == (
        "runs/x/config.json has an invalid training configuration: epochs must be at least 1, got 0")
    assert error.value.field == "epochs"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("epochs", 2.0, "must be an integer, got 2.0"),
    ("epochs", True, "must be an integer, got True"),
    ("lr", "0.1", "must be a number, got '0.1'"),
    ("lr", False, "must be a number, got False"),
    ("model", 3, "must be a string, got 3"),
    ("augment", 1, "must be True or False, got 1"),
    ("limit_train", 1.5, "must be an integer or None, got 1.5"),
    ("cuda_graphs", "on", "must be True or False or None, got 'on'"),
    ("data", 7, "must be a string or None, got 7"),
])
def test_a_value_of_the_wrong_type_names_the_types_its_field_takes(name: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"model": "lenet", name: value}, "c.json")
    assert str(error.value) == f"c.json has an invalid training configuration: {name} {expected}"
    assert error.value.field == name
    with pytest.raises(ConfigError) as error:
        TrainConfig(**{name: value}).validate()
    assert str(error.value) == f"{flag_name(name)} {expected}"


def test_an_integer_is_a_number_and_none_where_a_field_allows_it() -> None:
    assert config_from_dict({"model": "lenet", "lr": 1, "limit_train": None, "cuda_graphs": None}, "c.json").lr == 1


def test_an_unknown_keyword_of_recipe_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match=r"^unknown TrainConfig fields: \['colour', 'size'\]$"):
        recipe("lenet", colour="red", size=3)
    with pytest.raises(ConfigError, match="^--recipe must be d2l or fast, got 'book'$") as error:
        recipe("lenet", "book")
    assert error.value.field == "recipe"


def test_a_model_the_recipes_do_not_know_takes_its_own_input_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model registered by a user: the book's recipe of a network without one, at the model's input side."""
    from convzoo.config import recipe_values
    from convzoo.models import registry

    spec = registry.get_model_spec("lenet")
    monkeypatch.setitem(registry._REGISTRY, "mine", replace(spec, name="mine", input_size=40))  # noqa: SLF001
    assert recipe_values("mine", "d2l") == {"lr": 0.05, "batch_size": 128, "input_size": 40}
    assert recipe_values("mine", "fast") == {
        "epochs": 10, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.1,
        "augment": True, "tta": True, "init": "default", "amp": True, "lr": 0.05, "batch_size": 128, "input_size": 40}
    assert recipe_values("lenet") == {"lr": 0.9, "batch_size": 256, "input_size": 28}


def test_the_fields_a_recipe_sets() -> None:
    assert recipe_fields() == {"lr", "batch_size", "input_size", "epochs", "momentum", "weight_decay", "schedule",
                               "label_smoothing", "augment", "tta", "init", "amp"}
    assert flag_name("eval_batch_size") == "--eval-batch-size"
    assert [f.name for f in option_fields()][:3] == ["epochs", "batch_size", "lr"]


def test_a_refused_resume_names_every_setting_and_what_may_change() -> None:
    run = recipe("lenet", epochs=2, batch_size=32, seed=3)
    with pytest.raises(ConfigError) as error:
        resume_changes(run, {"batch_size": 64, "seed": 4, "epochs": 2})
    assert str(error.value) == (
        "--resume continues a run as it was configured: --batch-size cannot change (the run's is 32, given 64); "
        "--seed cannot change (the run's is 3, given 4); only --epochs, --lr, --device, --data-dir, "
        "--eval-batch-size can")
    assert error.value.field == "batch_size"
    with speaking(PYTHON), pytest.raises(ConfigError) as error:
        resume_changes(run, {"optimizer": "adamw"})
    assert str(error.value) == (
        "resume=True continues a run as it was configured: optimizer cannot change (the run's is 'sgd', given "
        "'adamw'); only epochs, lr, device, data_dir, eval_batch_size can")
    assert resume_changes(run, {"lr": 0.5, "device": None, "epochs": 2}) == {"lr": 0.5}


# --- the words of each door (terms.py) -----------------------------------------------------------------------------

def test_each_door_writes_settings_in_its_own_words(tmp_path: Path) -> None:
    from convzoo import terms

    run = tmp_path / "my runs" / "x"
    assert terms.door() == terms.COMMAND_LINE == "command line" and not terms.in_python()
    assert (terms.option("batch_size"), terms.setting("lr", 0.09), terms.setting("augment", False),
            terms.setting("augment", True), terms.setting("recipe", "fast"), terms.setting("epochs", 3),
            terms.setting("data", "my set")) == (
        "--batch-size", "--lr 0.09", "--no-augment", "--augment", "--recipe fast", "--epochs 3", "--data 'my set'")
    assert terms.resume(run) == f"--resume '{run}'"
    assert terms.continue_command(run, epochs=20, lr=0.5) == f"convzoo train --resume '{run}' --epochs 20 --lr 0.5"
    assert terms.continue_command("runs/x") == "convzoo train --resume runs/x"
    assert terms.quoted("convzoo train lenet") == "'convzoo train lenet'"
    assert terms.either("the flag", "the argument") == "the flag"
    assert terms.value_text(Path("runs/a b")) == "'runs/a b'" and terms.value_text(1e-7) == "1e-07"
    with speaking(PYTHON):
        assert terms.door() == terms.PYTHON == "Python" and terms.in_python()
        assert (terms.option("batch_size"), terms.setting("lr", 0.09), terms.setting("augment", False),
                terms.setting("augment", True), terms.setting("recipe", "fast"), terms.setting("epochs", 3)) == (
            "batch_size", "lr=0.09", "augment=False", "augment=True", "recipe='fast'", "epochs=3")
        assert terms.resume(run) == "resume=True"
        assert terms.continue_command(run, epochs=20) == f"train(out='{run}', resume=True, epochs=20)"
        assert terms.continue_command("runs/x") == "train(out='runs/x', resume=True)"
        assert terms.quoted("train(out='x')") == "train(out='x')"
        assert terms.either("the flag", "the argument") == "the argument"
        assert terms.value_text(Path("runs/x")) == "'runs/x'"
    assert terms.door() == terms.COMMAND_LINE  # the door is put back after the block


def test_the_python_door_lasts_for_the_call_and_yields_to_the_door_a_call_came_through() -> None:
    from convzoo import terms

    @terms.python_door
    def call(x: int, *, y: int) -> tuple[str, int]:
        """An API call."""
        return terms.door(), x + y

    assert call(1, y=2) == ("Python", 3) and call.__doc__ == "An API call." and call.__name__ == "call"
    assert terms.door() == "command line"
    with speaking("explorer"):
        assert call(1, y=1) == ("explorer", 2)
        assert terms.door() == "explorer"
    with pytest.raises(ZeroDivisionError), speaking("explorer"):
        raise ZeroDivisionError
    assert terms.door() == "command line"  # put back after an error too


def test_an_option_is_a_field_with_its_default_and_what_the_train_command_needs() -> None:
    from convzoo.config import option

    made = option(3, "how many", resume=True, choices=("a", "b"), metavar="N", flag=False)
    assert made.default == 3
    assert dict(made.metadata) == {"help": "how many", "resume": True, "choices": ("a", "b"), "metavar": "N",
                                   "flag": False}
    assert dict(option(None, "plain").metadata) == {"help": "plain", "resume": False, "choices": None,
                                                    "metavar": None, "flag": True}


def test_a_value_that_cannot_work_is_one_problem_however_many_checks_it_fails() -> None:
    """NaN and infinity are not positive, not >= 0, and not past float32's largest either: one problem each."""
    assert TrainConfig(lr=float("nan")).problems() == [("lr", "must be a positive number, got nan")]
    assert TrainConfig(momentum=float("inf")).problems() == [("momentum", "must be >= 0, got inf")]
    assert TrainConfig(weight_decay=float("-inf")).problems() == [("weight_decay", "must be >= 0, got -inf")]
    assert TrainConfig(lr=float("inf"), epochs=0).problems() == [("epochs", "must be at least 1, got 0"),
                                                                  ("lr", "must be a positive number, got inf")]
