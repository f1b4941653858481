"""The ``convzoo`` command itself: each flag's help, usage and default; how a flag reaches the API; errors, exit codes.

The tables below are what ``convzoo CMD --help`` shows a user, written out: a changed word, a lost
default or a flag that takes another type is a change a user sees.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import convzoo
from convzoo import cli
from convzoo.cli import common, train, zoo
from convzoo.config import option_fields
from convzoo.errors import ConfigError, UserError

Cli = Callable[..., tuple[int, str, str]]

# The commands of each command group, as `convzoo GROUP --help` lists them.
COMMANDS = {
    "": {"models": "list the model zoo", "summary": "layer-by-layer output shapes, parameters and MACs",
         "recipes": "the settings of each recipe (d2l, the book's; fast) for each model",
         "train": "train a model on Fashion-MNIST (or --data)",
         "eval": "evaluate a run on the test set (writes confusion.png)",
         "predict": "classify image files with a trained run",
         "data": "fetch, check, look at or export a data set",
         "show": "draw what a run learned, or the operations (PNG)",
         "report": "write RUN_DIR/report.html, one self-contained page about a run",
         "compare": "compare runs: a table, and one HTML page",
         "export": "export a run's model to ONNX or TorchScript, checked against PyTorch",
         "explore": "a local web page: the operations live, and a trained run from inside"},
    "data": {"fetch": "download into the cache, verifying checksums",
             "check": "verify a set's checksums, or read a folder and summarize it",
             "show": "draw a grid of samples with their class names",
             "export": "write a named set as a class-folder tree of PNGs"},
    "show": {"kernels": "learned kernels of a conv layer (kernels.png)",
             "features": "feature maps after each conv layer for one image (features.png)",
             "mistakes": "misclassified test images, true and predicted class (mistakes.png)",
             "confusion": "confusion matrix on the test set (confusion.png)",
             "curves": "train loss and test accuracy of several runs overlaid",
             "ops": "the worked examples: corr2d, padding and stride"},
}

RUN_DIR = "a run's directory (what 'convzoo train' wrote)"
RUN_DIRS = "runs' directories (what 'convzoo train' wrote)"
AS_JSON = "print JSON instead of text"
DEVICE = "auto (default: CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps"
DEVICE_SHORT = "auto (default), cpu, cuda, cuda:N or mps"
MOVED_DATA = "where the run's data files are now (default: where they were)"
DATA = "a named set (fashion-mnist, mnist, kmnist, cifar10; default fashion-mnist), an IDX folder or a folder of " \
       "images by class"
NAMED_FILES = "where a named set's files are (default: the cache, or the usual places)"
INVERT = "make the object light on dark like Fashion-MNIST (auto: when the border is light"
DATA_OPTIONS = {"--data": DATA, "--data-dir": NAMED_FILES, "--grayscale": "one channel, even for colour images",
                "--size": "resize every image to SIZE x SIZE pixels",
                "--test-fraction": "for a folder of one pool: the test share",
                "--seed": "for a folder of one pool: the split's seed"}

# (command, option or argument) -> its help; `train`'s recipe and run flags are TrainConfig's (below)
HELP = {
    ("", "--debug"): "show tracebacks for errors",
    ("", "--version"): "print the versions and exit",
    ("models", "--json"): AS_JSON,
    ("summary", "model"): "a name from 'convzoo models'",
    ("summary", "--input-size"): "input side (default: the model's native size)",
    ("summary", "--in-channels"): "input channels (default 1)",
    ("summary", "--num-classes"): "classes (default 10)",
    ("summary", "--json"): AS_JSON,
    ("recipes", "model"): "one model (default: every model)",
    ("recipes", "--json"): "print {model: {recipe: {setting: value}}}",
    ("train", "model"): "a name from 'convzoo models' (optional with --resume)",
    ("train", "--recipe"): "d2l (the book's, default) or fast",
    ("train", "--resume"): "continue an interrupted run from its last epoch",
    ("train", "--out"): "run directory (default runs/MODEL-RECIPE-seedN)",
    ("train", "--overwrite"): "replace an existing run directory",
    ("train", "--json"): "print only a JSON summary line",
    ("train", "--dry-run"): "print the resolved configuration and what the run would cost (parameters, MACs, memory, "
                            "time from a few timed steps); create nothing",
    ("train", "--tensorboard"): "log scalars for TensorBoard to DIR (default: tensorboard/RUN_NAME next to the run "
                                "directory; give another as --tensorboard=DIR); needs convzoo[tensorboard]",
    ("eval", "run_dir"): RUN_DIR,
    ("eval", "--device"): DEVICE,
    ("eval", "--data-dir"): "the directory of the data set's files (default: the run's, else the usual places)",
    ("eval", "--json"): AS_JSON,
    ("predict", "run_dir"): "the run's directory (left out with --pretrained)",
    ("predict", "images"): "image files, folders (their image files) or globs in quotes ('photos/*.jpg', "
                           "'scans/**/*.png')",
    ("predict", "--top-k"): "show the K most probable classes (default 3, or all of a run of fewer)",
    ("predict", "--pretrained"): "a run shipped with convzoo instead of RUN_DIR: lenet, lenet_bn, lenet_modern",
    ("predict", "--invert"): INVERT + "; a run on a folder of images reads them as they are unless yes)",
    ("predict", "--device"): DEVICE,
    ("predict", "--json"): AS_JSON,
    ("data fetch", "name"): "the set (default fashion-mnist)",
    ("data fetch", "--dest"): "directory (default: the user cache)",
    ("data fetch", "--mirror"): "base URL of a mirror",
    **{("data check", option): text for option, text in DATA_OPTIONS.items()},
    ("data check", "--json"): AS_JSON,
    ("data show", "--out"): "PNG file to write",
    ("data show", "--split"): "train (default) or test",
    ("data show", "--count"): "how many images",
    **{("data show", option): text for option, text in DATA_OPTIONS.items()},
    ("data export", "name"): "a published data set",
    ("data export", "dest"): "a new or empty folder",
    ("data export", "--data-dir"): "where the set's files are (default: the cache, or the usual places)",
    ("show kernels", "run_dir"): RUN_DIR,
    ("show kernels", "--layer"): "conv layer name, e.g. 3 or 2.0.p2_2 (default: the first conv layer)",
    ("show kernels", "--out"): "PNG file (default: RUN_DIR/kernels.png)",
    ("show features", "run_dir"): RUN_DIR,
    ("show features", "image"): "an image file (PNG, JPEG, ...)",
    ("show features", "--channels"): "feature maps per layer (default 8)",
    ("show features", "--invert"): INVERT + ")",
    ("show features", "--out"): "PNG file (default: RUN_DIR/features.png)",
    ("show mistakes", "run_dir"): RUN_DIR,
    ("show mistakes", "--count"): "how many (default 24)",
    ("show mistakes", "--out"): "PNG file (default: RUN_DIR/mistakes.png)",
    ("show mistakes", "--device"): DEVICE_SHORT,
    ("show mistakes", "--data-dir"): MOVED_DATA,
    ("show confusion", "run_dir"): RUN_DIR,
    ("show confusion", "--out"): "PNG file (default: RUN_DIR/confusion.png)",
    ("show confusion", "--device"): DEVICE_SHORT,
    ("show confusion", "--data-dir"): MOVED_DATA,
    ("show curves", "run_dirs"): RUN_DIRS,
    ("show curves", "--out"): "PNG file (default: curves-compared.png)",
    ("show ops", "--out"): "PNG file (default: ops.png)",
    ("report", "run_dir"): RUN_DIR,
    ("report", "--device"): DEVICE_SHORT,
    ("report", "--data-dir"): MOVED_DATA,
    ("compare", "run_dirs"): RUN_DIRS,
    ("compare", "--out"): "HTML file (default: compare.html; with --json, none unless given)",
    ("compare", "--json"): 'print {"out", "runs": [...]} instead of the table',
    ("export", "run_dir"): RUN_DIR,
    ("export", "--format"): "onnx (default) or torchscript",
    ("export", "--out"): "file to write (default: RUN_DIR/model.onnx or RUN_DIR/model.pt)",
    ("export", "--json"): AS_JSON,
    ("export", "--data-dir"): MOVED_DATA,
    ("explore", "run_dir"): "a finished run directory (optional)",
    ("explore", "--host"): "address to listen on (default 127.0.0.1, this machine only)",
    ("explore", "--allow-remote"): "allow a --host other machines can reach (the secret in the address still "
                                   "guards it)",
    ("explore", "--port"): "port (default: a free one)",
    ("explore", "--device"): DEVICE,
    ("explore", "--data-dir"): "directory with the Fashion-MNIST files for the test images (default: the run's)",
    ("explore", "--open"): "open the address in the default browser",
}

# What a few of `train`'s generated flags say of their default (the rest of their help is TrainConfig's).
TRAIN_FLAG_HELP = {
    "--epochs": "passes over the training set (default: the recipe's)",
    "--seed": "random seed: weights, batch order, augmentation (default: 0)",
    "--device": "auto, cpu, cuda, cuda:N or mps (default: auto)",
    "--channels-last": "NHWC activations: the fast convolution path on CPU and GPU (default: on)",
    "--compile": "torch.compile the model (pays off only when a run is long enough) (default: off)",
    "--limit-train": "train on the first N images",
    "--threads": "CPU threads (default: PyTorch's); --deterministic records the count used",
    "--optimizer": "sgd (Nesterov when --momentum > 0) or adamw (default: sgd)",
}

USAGE = {
    "": "[-h] [--debug] [--version] "
        "{models,summary,recipes,train,eval,predict,data,show,report,compare,export,explore} ...",
    "models": "[-h] [--json]",
    "summary": "[-h] [--input-size INPUT_SIZE] [--in-channels IN_CHANNELS] [--num-classes NUM_CLASSES] [--json] model",
    "recipes": "[-h] [--json] [model]",
    "train": "[-h] [--recipe RECIPE] [--resume RUN_DIR] [--out DIR] [--overwrite] [--json] [--dry-run] "
             "[--tensorboard [DIR]] [--epochs EPOCHS] [--batch-size BATCH_SIZE] [--lr LR] [--optimizer {sgd,adamw}] "
             "[--momentum MOMENTUM] [--weight-decay WEIGHT_DECAY] [--schedule {constant,onecycle,cosine}] "
             "[--label-smoothing LABEL_SMOOTHING] [--augment | --no-augment] [--tta | --no-tta] "
             "[--init {xavier,kaiming,default}] [--input-size INPUT_SIZE] [--seed SEED] [--device DEVICE] "
             "[--backend {torch,scratch}] [--channels-last | --no-channels-last] [--amp | --no-amp] "
             "[--compile | --no-compile] [--cuda-graphs | --no-cuda-graphs] [--autotune | --no-autotune] "
             "[--limit-train N] [--limit-test N] [--data DATA] [--grayscale | --no-grayscale] [--data-size N] "
             "[--test-fraction F] [--val-fraction F] [--data-dir DIR] [--eval-batch-size EVAL_BATCH_SIZE] "
             "[--deterministic | --no-deterministic] [--threads THREADS] [model]",
    "eval": "[-h] [--device DEVICE] [--data-dir DATA_DIR] [--json] run_dir",
    "predict": "[-h] [--top-k K] [--pretrained NAME] [--invert {auto,yes,no}] [--device DEVICE] [--json] "
               "RUN_DIR [IMAGE ...]",
    "data": "[-h] {fetch,check,show,export} ...",
    "data fetch": "[-h] [--dest DEST] [--mirror MIRROR] [{fashion-mnist,mnist,kmnist,cifar10}]",
    "data check": "[-h] [--data DATA] [--data-dir DATA_DIR] [--grayscale] [--size SIZE] "
                  "[--test-fraction TEST_FRACTION] [--seed SEED] [--json]",
    "data show": "[-h] --out OUT [--split {train,test}] [--count COUNT] [--data DATA] [--data-dir DATA_DIR] "
                 "[--grayscale] [--size SIZE] [--test-fraction TEST_FRACTION] [--seed SEED]",
    "data export": "[-h] [--data-dir DATA_DIR] {fashion-mnist,mnist,kmnist,cifar10} dest",
    "show": "[-h] {kernels,features,mistakes,confusion,curves,ops} ...",
    "show kernels": "[-h] [--layer LAYER] [--out OUT] run_dir",
    "show features": "[-h] [--channels CHANNELS] [--invert {auto,yes,no}] [--out OUT] run_dir image",
    "show mistakes": "[-h] [--count COUNT] [--out OUT] [--device DEVICE] [--data-dir DATA_DIR] run_dir",
    "show confusion": "[-h] [--out OUT] [--device DEVICE] [--data-dir DATA_DIR] run_dir",
    "show curves": "[-h] [--out OUT] RUN_DIR [RUN_DIR ...]",
    "show ops": "[-h] [--out OUT]",
    "report": "[-h] [--device DEVICE] [--data-dir DATA_DIR] run_dir",
    "compare": "[-h] [--out OUT] [--json] RUN_DIR [RUN_DIR ...]",
    "export": "[-h] [--format {onnx,torchscript}] [--out OUT] [--json] [--data-dir DATA_DIR] run_dir",
    "explore": "[-h] [--host HOST] [--allow-remote] [--port PORT] [--device DEVICE] [--data-dir DATA_DIR] [--open] "
               "[run_dir]",
}

# The shortest command line of each command, and every setting it then gets (`func` aside).
TRAIN_DEFAULTS = {"model": "lenet", "recipe": None, "resume": None, "out": None, "overwrite": None, "json": False,
                  "dry_run": False, "tensorboard": None,
                  **{name: None for name in (
                      "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule",
                      "label_smoothing", "augment", "tta", "init", "input_size", "seed", "device", "backend",
                      "channels_last", "amp", "compile", "cuda_graphs", "autotune", "limit_train", "limit_test",
                      "data", "grayscale", "data_size", "test_fraction", "val_fraction", "data_dir",
                      "eval_batch_size", "deterministic", "threads")}}
DEFAULTS = [
    (["models"], {"json": False}),
    (["summary", "lenet"], {"model": "lenet", "input_size": None, "in_channels": 1, "num_classes": 10,
                            "json": False}),
    (["recipes"], {"model": None, "json": False}),
    (["train", "lenet"], TRAIN_DEFAULTS),
    (["eval", "r"], {"run_dir": "r", "device": "auto", "data_dir": None, "json": False}),
    (["predict", "r"], {"run_dir": "r", "images": [], "top_k": None, "pretrained": None, "invert": "auto",
                        "device": "auto", "json": False}),
    (["data", "fetch"], {"data_command": "fetch", "name": None, "dest": None, "mirror": None}),
    (["data", "check"], {"data_command": "check", "data": None, "data_dir": None, "grayscale": False, "size": None,
                         "test_fraction": 0.2, "seed": 0, "json": False}),
    (["data", "show", "--out", "x.png"], {"data_command": "show", "out": "x.png", "split": "train", "count": 40,
                                          "data": None, "data_dir": None, "grayscale": False, "size": None,
                                          "test_fraction": 0.2, "seed": 0}),
    (["data", "export", "mnist", "d"], {"data_command": "export", "name": "mnist", "dest": "d", "data_dir": None}),
    (["show", "kernels", "r"], {"show_command": "kernels", "run_dir": "r", "layer": None, "out": None}),
    (["show", "features", "r", "i.png"], {"show_command": "features", "run_dir": "r", "image": "i.png",
                                          "channels": 8, "invert": "auto", "out": None}),
    (["show", "mistakes", "r"], {"show_command": "mistakes", "run_dir": "r", "count": 24, "out": None,
                                 "device": "auto", "data_dir": None}),
    (["show", "confusion", "r"], {"show_command": "confusion", "run_dir": "r", "out": None, "device": "auto",
                                  "data_dir": None}),
    (["show", "curves", "r"], {"show_command": "curves", "run_dirs": ["r"], "out": "curves-compared.png"}),
    (["show", "ops"], {"show_command": "ops", "out": "ops.png"}),
    (["report", "r"], {"run_dir": "r", "device": "auto", "data_dir": None}),
    (["compare", "r"], {"run_dirs": ["r"], "out": None, "json": False}),
    (["export", "r"], {"run_dir": "r", "format": "onnx", "out": None, "json": False, "data_dir": None}),
    (["explore"], {"run_dir": None, "host": "127.0.0.1", "allow_remote": False, "port": 0, "device": "auto",
                   "data_dir": None, "open": False}),
]


@pytest.fixture
def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its words ('' for ``convzoo`` itself, 'data show', ...); built for each test (a
    few milliseconds), so that mutmut sees each test reach the functions that build it."""
    found = {}

    def walk(parser: argparse.ArgumentParser, words: str) -> None:
        found[words] = parser
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, f"{words} {name}".strip())

    walk(cli.build_parser(), "")
    return found


def _arguments(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {(a.option_strings or [a.dest])[0]: a for a in parser._actions  # noqa: SLF001
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)}  # noqa: SLF001


# --- what --help shows --------------------------------------------------------------------------

def test_every_option_and_argument_of_every_command_has_help(parsers: dict[str, argparse.ArgumentParser]) -> None:
    missing = [f"convzoo {words} {name}" for words, parser in parsers.items()
               for name, action in _arguments(parser).items() if not action.help]
    assert not missing


def test_every_command_is_listed_with_its_help(parsers: dict[str, argparse.ArgumentParser]) -> None:
    for words, commands in COMMANDS.items():
        action = next(a for a in parsers[words]._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
        assert {choice.dest: choice.help for choice in action._choices_actions} == commands  # noqa: SLF001


def test_the_help_of_each_option(parsers: dict[str, argparse.ArgumentParser]) -> None:
    config_flags = {f"--{f.name.replace('_', '-')}" for f in option_fields()}
    shown = {(words, name): action.help for words, parser in parsers.items()
             for name, action in _arguments(parser).items() if not (words == "train" and name in config_flags)}
    assert shown == HELP


def test_a_train_flag_says_its_default(parsers: dict[str, argparse.ArgumentParser]) -> None:
    arguments = _arguments(parsers["train"])
    assert {flag: arguments[flag].help for flag in TRAIN_FLAG_HELP} == TRAIN_FLAG_HELP


def test_train_groups_its_flags_as_help_shows_them(parsers: dict[str, argparse.ArgumentParser]) -> None:
    groups = [(group.title, group.description, [(a.option_strings or [a.dest])[0] for a in group._group_actions])
              for group in parsers["train"]._action_groups]  # noqa: SLF001
    assert groups == [
        ("positional arguments", None, ["model"]),
        ("options", None, ["-h", "--recipe", "--resume", "--out", "--overwrite", "--json", "--dry-run",
                           "--tensorboard"]),
        ("recipe overrides", "each recipe's values: 'convzoo recipes MODEL'; the whole configuration and its cost: "
                             "--dry-run",
         ["--epochs", "--batch-size", "--lr", "--optimizer", "--momentum", "--weight-decay", "--schedule",
          "--label-smoothing", "--augment", "--tta", "--init", "--input-size"]),
        ("run", None, ["--seed", "--device", "--backend", "--channels-last", "--amp", "--compile", "--cuda-graphs",
                       "--autotune", "--limit-train", "--limit-test", "--data", "--grayscale", "--data-size",
                       "--test-fraction", "--val-fraction", "--data-dir", "--eval-batch-size", "--deterministic",
                       "--threads"]),
    ]


def test_predict_describes_itself(parsers: dict[str, argparse.ArgumentParser]) -> None:
    assert parsers["predict"].description == (
        "Classify images: the most probable classes of each, and a warning for an image that is nothing like "
        "Fashion-MNIST (a blank page, noise) for a run on it; an image is read as the run's data was (docs/data.md).")
    assert [words for words, parser in parsers.items() if parser.description] == ["", "predict"]


def test_the_usage_of_each_command(parsers: dict[str, argparse.ArgumentParser],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line each
    assert {words: parser.format_usage() for words, parser in parsers.items()} == \
        {words: f"usage: convzoo {words} {usage}\n".replace("  ", " ") for words, usage in USAGE.items()}


def test_the_program_description_and_version(run_cli: Cli) -> None:
    assert cli.build_parser().description == "Classic CNNs and their operations, trained on Fashion-MNIST."
    code, out, err = run_cli("--version")
    assert code == 0 and err == ""
    assert out == f"convzoo {convzoo.__version__} (torch {torch.__version__}, Python {platform.python_version()})\n"


@pytest.mark.parametrize("argv, expected", DEFAULTS, ids=[" ".join(argv[:2]) for argv, _ in DEFAULTS])
def test_the_defaults_of_each_command(argv: list[str], expected: dict) -> None:
    settings = vars(cli.build_parser().parse_args(argv))
    del settings["func"]
    assert settings == {"debug": False, "command": argv[0], **expected}


def test_each_command_runs_its_own_function() -> None:
    parser = cli.build_parser()
    functions = {" ".join(argv[:1]): parser.parse_args(argv).func.__name__ for argv, _ in DEFAULTS}
    assert functions == {"models": "cmd_models", "summary": "cmd_summary", "recipes": "cmd_recipes",
                         "train": "cmd_train", "eval": "cmd_eval", "predict": "cmd_predict", "data": "cmd_data",
                         "show": "cmd_show", "report": "cmd_report", "compare": "cmd_compare",
                         "export": "cmd_export", "explore": "cmd_explore"}


# --- argument errors: one line, exit 2 ----------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["eval"], "the following arguments are required: run_dir (see 'convzoo eval --help')"),
    (["data", "show"], "the following arguments are required: --out (see 'convzoo data show --help')"),
    (["train", "lenet", "--epochs", "two"], "argument --epochs: expected an integer, got 'two' "
                                            "(see 'convzoo train --help')"),
    (["train", "lenet", "--lr", "fast"], "argument --lr: expected a number, got 'fast' (see 'convzoo train --help')"),
    (["train", "lenet", "--test-fraction", "half"], "argument --test-fraction: expected a number, got 'half' "
                                                    "(see 'convzoo train --help')"),
    (["summary", "lenet", "--in-channels", "3.5"], "argument --in-channels: expected an integer, got '3.5' "
                                                   "(see 'convzoo summary --help')"),
    (["data", "check", "--test-fraction", "x"], "argument --test-fraction: expected a number, got 'x' "
                                                "(see 'convzoo data check --help')"),
    (["data", "show", "--out", "a.png", "--count", "many"], "argument --count: expected an integer, got 'many' "
                                                            "(see 'convzoo data show --help')"),
    (["predict", "r", "--top-k", "1.5"], "argument --top-k: expected an integer, got '1.5' "
                                         "(see 'convzoo predict --help')"),
    (["show", "features", "r", "i.png", "--channels", "all"], "argument --channels: expected an integer, got 'all' "
                                                              "(see 'convzoo show features --help')"),
    (["show", "mistakes", "r", "--count", "x"], "argument --count: expected an integer, got 'x' "
                                                "(see 'convzoo show mistakes --help')"),
])
def test_a_bad_argument_is_one_line_and_exit_2(argv: list[str], message: str, run_cli: Cli) -> None:
    code, out, err = run_cli(*argv)
    assert (code, out, err) == (2, "", f"error: {message}\n")


def test_parse_int_and_parse_float() -> None:
    assert common.parse_int("-3") == -3 and common.parse_float("2.5e-3") == 0.0025
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected an integer, got '3\.0'$"):
        common.parse_int("3.0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a number, got 'x'$"):
        common.parse_float("x")


# --- the flags of `train` as the API's arguments ------------------------------------------------

def _train_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["train", *argv])


def test_train_flags_become_the_api_arguments() -> None:
    arguments = train.train_arguments(_train_args("lenet", "--recipe", "fast", "--out", "o", "--epochs", "3",
                                                  "--lr", "0.5", "--no-augment", "--resize", "32", "--device", "cpu",
                                                  "--limit-train", "64", "--val-fraction", "0.1"))
    expected = {"model": "lenet", "out": "o", "recipe": "fast", "resume": False,
                **{f.name: None for f in option_fields()}}
    expected.update(epochs=3, lr=0.5, augment=False, input_size=32, device="cpu", limit_train=64, val_fraction=0.1)
    assert arguments == expected


def test_resume_continues_its_own_directory() -> None:
    arguments = train.train_arguments(_train_args("--resume", "runs/a", "--out", "runs/../runs/a"))
    assert (arguments["model"], arguments["out"], arguments["resume"]) == (None, "runs/a", True)
    assert train.train_arguments(_train_args("--resume", "runs/a"))["out"] == "runs/a"


def test_resume_with_another_out_is_refused(run_cli: Cli) -> None:
    code, out, err = run_cli("train", "--resume", "runs/a", "--out", "runs/b")
    assert (code, out) == (2, "")
    assert err == "error: --resume continues runs/a in place: --out runs/b names another directory\n"
    with pytest.raises(ConfigError) as caught:
        train.train_arguments(_train_args("--resume", "a", "--out", "b"))
    assert caught.value.field == "out"


def test_tensorboard_before_the_model_gives_the_model_back() -> None:
    args = _train_args("--tensorboard", "lenet")
    assert train.train_arguments(args)["model"] == "lenet" and args.tensorboard == ""
    args = _train_args("--tensorboard", "logs", "lenet")
    assert train.train_arguments(args)["model"] == "lenet" and args.tensorboard == "logs"
    args = _train_args("alexnet", "--tensorboard", "lenet")  # a model given: the flag's value is a directory
    assert train.train_arguments(args)["model"] == "alexnet" and args.tensorboard == "lenet"
    args = _train_args("lenet", "--tensorboard")
    assert args.tensorboard == ""


@pytest.fixture
def spy_train(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """``api.train`` replaced by a spy that records its arguments and returns a finished run's numbers."""
    seen: dict = {}

    class Finished:
        test_acc, val_acc, epochs, train_seconds = 0.81234, None, 2, 12.34
        run_dir = Path("runs/le\x1bnet")  # a control character: printed escaped

        def to_json(self) -> dict:
            return {"run_dir": str(self.run_dir), "test_acc": self.test_acc}

    def fake_train(**kwargs: object) -> Finished:
        seen.update(kwargs)
        log = kwargs["log"]
        log("epoch 1 of 2")  # what a run logs: shown, unless --json
        return Finished()

    monkeypatch.setattr(train.api, "train", fake_train)
    seen["finished"] = Finished
    yield seen


def test_train_reports_its_result_and_passes_its_switches(spy_train: dict, run_cli: Cli,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["convzoo", "train", "lenet", "--epochs", "2"])
    code, out, err = run_cli("train", "lenet", "--epochs", "2")
    assert (code, err) == (0, "")
    assert out == ("epoch 1 of 2\ntest accuracy 0.8123 after 2 epochs, 12.3 s\nrun directory: runs/le\\x1bnet  "
                   "(open runs/le\\x1bnet/report.html: curves, confusion matrix, mistakes)\n")
    assert spy_train["overwrite"] is False and spy_train["tensorboard"] is None
    assert spy_train["command"] == "convzoo train lenet --epochs 2"
    assert spy_train["epochs"] == 2 and spy_train["model"] == "lenet"


def test_train_with_a_validation_split_shows_its_accuracy(spy_train: dict, run_cli: Cli) -> None:
    spy_train["finished"].val_acc = 0.7
    code, out, _ = run_cli("train", "lenet", "--overwrite", "--tensorboard")
    assert code == 0 and "test accuracy 0.8123 (validation accuracy 0.7000) after 2 epochs, 12.3 s\n" in out
    assert spy_train["overwrite"] is True and spy_train["tensorboard"] is True  # True: next to the run directory


def test_train_log_lines_reach_a_log_file_as_they_come(spy_train: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    log = Flushed()
    monkeypatch.setattr(sys, "stdout", log)
    assert cli.main(["train", "lenet"]) == 0
    assert log.flushed[0] == "epoch 1 of 2\n"  # flushed before the run goes on


def test_train_json_prints_only_the_json_line(spy_train: dict, run_cli: Cli) -> None:
    code, out, _ = run_cli("train", "lenet", "--json", "--tensorboard=logs")
    assert code == 0 and json.loads(out) == {"run_dir": "runs/le\x1bnet", "test_acc": 0.81234}
    assert out.count("\n") == 1 and spy_train["tensorboard"] == "logs"


def test_train_on_another_rank_of_a_torchrun_job_stays_quiet(spy_train: dict, run_cli: Cli,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    code, out, _ = run_cli("train", "lenet", "--tensorboard", "logs")
    assert (code, out) == (0, "epoch 1 of 2\n")
    assert spy_train["tensorboard"] is None  # rank 0 logs for every rank


# --- how main reports errors --------------------------------------------------------------------

def _failing(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def fail(_args: argparse.Namespace) -> None:
        raise error

    monkeypatch.setattr(zoo, "cmd_models", fail)


def test_a_user_error_is_one_line_with_its_exit_code(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    error = UserError("the first line\n\n  and the second\x1b[31m")
    error.exit_code = 3
    _failing(monkeypatch, error)
    assert run_cli("models") == (3, "", "error: the first line and the second\\x1b[31m\n")
    monkeypatch.setenv("RANK", "2")
    assert run_cli("models") == (3, "", "rank 2: error: the first line and the second\\x1b[31m\n")
    with pytest.raises(UserError):
        run_cli("--debug", "models")


def test_a_file_system_error_is_the_users(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, OSError(errno.EROFS, "Read-only file system", "runs/a"))
    assert run_cli("models") == (2, "", "error: runs/a: the file system is read-only: write elsewhere\n")
    monkeypatch.setenv("RANK", "1")
    assert run_cli("models")[2] == "rank 1: error: runs/a: the file system is read-only: write elsewhere\n"
    with pytest.raises(OSError):
        run_cli("--debug", "models")


def test_another_os_error_is_a_bug(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(OSError):
        run_cli("models")


def test_a_broken_pipe_ends_quietly(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, BrokenPipeError())
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # main points it at the null device: put back after the test
    assert run_cli("models") == (0, "", "")
    null, sys.stdout = sys.stdout, sys.__stdout__
    null.close()
    assert (null.name, null.mode) == (os.devnull, "w")  # what is printed at exit goes nowhere, not to the pipe


class Flushed(io.StringIO):
    """A log file: records what it held each time it was flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())
        super().flush()


def test_an_interrupt_says_so_on_rank_0_only(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing(monkeypatch, KeyboardInterrupt())
    assert run_cli("models") == (130, "", "error: interrupted\n")
    terminated = KeyboardInterrupt("stopped by SIGTERM: resume with\nconvzoo train --resume runs/a")
    terminated.exit_code = 143
    _failing(monkeypatch, terminated)
    assert run_cli("models") == (143, "", "error: stopped by SIGTERM: resume with convzoo train --resume runs/a\n")
    monkeypatch.setenv("RANK", "1")
    assert run_cli("models") == (143, "", "")


@pytest.mark.parametrize("rank, prefix", [("", ""), ("0", ""), ("1", "rank 1: "), (" 12 ", "rank 12: "),
                                          ("-1", ""), ("x", "")])
def test_rank_prefix(rank: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", rank)
    assert common.rank_prefix() == prefix


def test_errors_speak_of_flags(run_cli: Cli) -> None:
    code, _, err = run_cli("train", "lenet", "--batch-size", "0", "--dry-run")
    assert code == 2 and "--batch-size" in err and "batch_size" not in err


# --- the zoo: models, summary, recipes ----------------------------------------------------------

LENET_ROW = ("lenet              61,706      28         416,520  LeNet-5 (sigmoid, average pooling), the chapter's "
             "network; 61,706 parameters at 28x28.")


def test_models_lists_each_model_with_its_size(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "list_models", lambda: ["lenet", "lenet_bn"])  # two small ones: the table's format
    code, out, err = run_cli("models")
    assert (code, err) == (0, "")
    # LeNet: 156 + 2,416 + 48,120 + 10,164 + 850 parameters; 117,600 + 240,000 + 48,000 + 10,080 + 840 MACs
    lines = out.splitlines()
    assert lines[:2] == ["model              params   input            MACs  description", LENET_ROW]
    assert len(lines) == 3 and lines[2].startswith("lenet_bn ")
    code, out, _ = run_cli("models", "--json")
    rows = json.loads(out)
    assert rows[0] == {"name": "lenet", "params": 61706, "input_size": 28, "macs": 416520,
                       "description": LENET_ROW.split("  ")[-1]}
    assert [row["name"] for row in rows] == ["lenet", "lenet_bn"]


def test_summary_takes_the_input_size_channels_and_classes(run_cli: Cli) -> None:
    # at 32 x 32 with 3 channels and 5 classes: conv1 6*3*25+6 = 456, conv2 2,416, 16*6*6 = 576 features into
    # 576*120+120 = 69,240, then 10,164 and 84*5+5 = 425 parameters; MACs 32*32*6*75 = 460,800 +
    # 12*12*16*150 = 345,600 + 69,120 + 10,080 + 420
    code, out, err = run_cli("summary", "lenet", "--input-size", "32", "--in-channels", "3", "--num-classes", "5")
    assert (code, err) == (0, "")
    assert out.endswith("total parameters: 82,701\ntotal MACs: 886,020 (FLOPs = 2 x MACs = 1,772,040)\n")
    code, out, _ = run_cli("summary", "lenet", "--input-size", "32", "--in-channels", "3", "--num-classes", "5",
                           "--json")
    table = json.loads(out)
    assert (table["input_shape"], table["layers"][-1]["output_shape"]) == ([1, 3, 32, 32], [1, 5])
    assert sum(layer["params"] for layer in table["layers"]) == 82701


def test_recipes_of_one_model_and_of_every_model(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_cli("recipes", "lenet")
    assert (code, err) == (0, "")
    assert out == """\
lenet               d2l         fast
  --epochs          10          10
  --batch-size      256         256
  --lr              0.9         0.1
  --momentum        0           0.9
  --weight-decay    0           0.0005
  --schedule        constant    onecycle
  --label-smoothing 0           0.1
  --augment         off         on
  --tta             off         on
  --init            xavier      default
  --input-size      28          28
  --amp             off         on
  fast: not verified at full length (a starting point; the README's Results say what was measured)
"""
    code, out, _ = run_cli("recipes", "resnet18")
    assert out.endswith("\n  fast: verified, 0.93 test accuracy in 6 epochs on one H200\n")
    monkeypatch.setattr(zoo, "list_models", lambda: ["alexnet", "lenet"])
    code, out, _ = run_cli("recipes")
    blocks = out.split("\n\n")  # every model, a blank line between
    assert len(blocks) == 2 and blocks[1] == run_cli("recipes", "lenet")[1]
    assert blocks[0].startswith("alexnet             d2l         fast\n  --epochs          10          10\n")
    assert json.loads(run_cli("recipes", "lenet", "--json")[1])["lenet"]["d2l"]["lr"] == 0.9


# --- eval, predict, export, report, compare, show: the library's results as the user reads them ----------
# The library's functions are replaced by spies that record what the command passed them and return
# results written out here: what is pinned is the command's own work, its arguments and its lines.

class Spy:
    """Records each call as ``(name, args, kwargs)`` and returns ``returns[name]``."""

    def __init__(self, **returns: object) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.returns = returns

    def __getattr__(self, name: str) -> Callable[..., object]:
        if name.startswith("_") or name not in self.returns:
            raise AttributeError(name)

        def call(*args: object, **kwargs: object) -> object:
            self.calls.append((name, args, kwargs))
            return self.returns[name]

        return call


def test_eval_prints_the_accuracy_of_each_class(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import show

    class Evaluation:
        accuracy, loss, count, per_class_accuracy = 0.55556, 1.23456789, 12345, [0.123456, 0.98765, 0.5]

    run = Spy(evaluate=Evaluation())
    run.classes = ["T-shirt/top", "a class with a long name", "Sh\x1boe"]
    load = Spy(load=run)
    monkeypatch.setattr(cli.evaluate.api, "load", load.load)
    drawn = Spy(show_confusion=Path("runs/a/confu\x1bsion.png"))
    monkeypatch.setattr(show, "show_confusion", drawn.show_confusion)
    code, out, err = run_cli("eval", "runs/a", "--device", "cpu", "--data-dir", "data")
    assert (code, err) == (0, "")
    assert out == """\
test accuracy 0.5556 on 12,345 images (loss 1.2346)
  T-shirt/top              0.1235
  a class with a long name 0.9877
  Sh\\x1boe                 0.5000
confusion matrix: runs/a/confu\\x1bsion.png
"""
    assert load.calls == [("load", ("runs/a", "cpu"), {})] and run.calls == [("evaluate", ("data",), {})]
    assert drawn.calls == [("show_confusion", ("runs/a",), {"evaluation": run.returns["evaluate"]})]
    code, out, _ = run_cli("eval", "runs/a", "--json")
    assert json.loads(out) == {"run_dir": "runs/a", "test_acc": 0.55556, "test_loss": 1.234568, "num_examples": 12345,
                               "per_class_accuracy": {"T-shirt/top": 0.1235, "a class with a long name": 0.9877,
                                                      "Sh\x1boe": 0.5},
                               "confusion": "runs/a/confu\x1bsion.png"}
    assert load.calls[-1] == ("load", ("runs/a", "auto"), {}) and run.calls[-1] == ("evaluate", (None,), {})
    run.classes = ["a", "b", "c"]  # short names: a column 12 wide
    assert run_cli("eval", "runs/a")[1].splitlines()[1] == "  a            0.1235"


class Prediction:
    def __init__(self, name: str) -> None:
        self.name = name

    def format(self) -> str:
        return f"{self.name}: Bag 0.9"

    def to_json(self) -> dict:
        return {"image": self.name, "class": "Bag"}


def test_predict_passes_its_images_and_prints_each_prediction(run_cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    run = Spy(predict=[Prediction("a.png"), Prediction("b.png")])
    load = Spy(load=run)
    monkeypatch.setattr(cli.evaluate.api, "load", load.load)
    code, out, err = run_cli("predict", "runs/a", "a.png", "b.png", "--invert", "no", "--device", "cpu")
    assert (code, out, err) == (0, "a.png: Bag 0.9\nb.png: Bag 0.9\n", "")
    assert load.calls == [("load", ("runs/a", "cpu"), {})]
    assert run.calls == [("predict", (["a.png", "b.png"],), {"top_k": None, "invert": "no"})]
    code, out, _ = run_cli("predict", "runs/a", "a.png", "--json")
    assert json.loads(out) == [{"image": "a.png", "class": "Bag"}, {"image": "b.png", "class": "Bag"}]
    assert load.calls[-1] == ("load", ("runs/a", "auto"), {})
    assert run.calls[-1] == ("predict", (["a.png"],), {"top_k": None, "invert": "auto"})


def test_predict_with_a_pretrained_run_takes_every_argument_as_an_image(run_cli: Cli,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo.pretrained import pretrained_dir

    run = Spy(predict=[Prediction("a.png")])
    load = Spy(load=run)
    monkeypatch.setattr(cli.evaluate.api, "load", load.load)
    code, out, _ = run_cli("predict", "--pretrained", "lenet", "a.png", "b.png", "--top-k", "10")
    assert (code, out) == (0, "a.png: Bag 0.9\n")
    assert load.calls == [("load", (pretrained_dir("lenet"), "auto"), {})]
    assert run.calls == [("predict", (["a.png", "b.png"],), {"top_k": 10, "invert": "auto"})]


@pytest.mark.parametrize("argv, message", [
    (["predict", "runs/a"], "predict needs at least one IMAGE"),
    (["predict", "--pretrained", "lenet", "a.png", "--top-k", "11"], "--top-k must be between 1 and 10, got 11"),
    (["predict", "--pretrained", "lenet", "a.png", "--top-k", "0"], "--top-k must be between 1 and 10, got 0"),
])
def test_predict_refuses_before_loading_the_network(argv: list[str], message: str, run_cli: Cli,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    load = Spy(load=None)
    monkeypatch.setattr(cli.evaluate.api, "load", load.load)
    assert run_cli(*argv) == (2, "", f"error: {message}\n")
    assert load.calls == []


def test_export_says_what_it_wrote(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    class Exported:
        path, format, channels, input_size = Path("o/m\x1b.onnx"), "onnx", 3, 32
        max_abs_diff, batch_sizes = 3.14e-6, (1, 7)

        def to_json(self) -> dict:
            return {"path": "o/m.onnx"}

    spy = Spy(export_run=Exported())
    monkeypatch.setattr(cli.export, "export_run", spy.export_run)
    code, out, err = run_cli("export", "runs/a", "--format", "torchscript", "--out", "o/m.pt", "--data-dir", "d")
    assert (code, err) == (0, "")
    assert out == ("wrote o/m\\x1b.onnx (onnx, input N x 3 x 32 x 32); max |logit difference| to PyTorch "
                   "3.1e-06 on batches of 1 and 7 test images\n")
    assert spy.calls == [("export_run", ("runs/a", "torchscript", "o/m.pt"), {"data_dir": "d"})]
    code, out, _ = run_cli("export", "runs/a", "--json")
    assert (code, json.loads(out)) == (0, {"path": "o/m.onnx"})
    assert spy.calls[-1] == ("export_run", ("runs/a", "onnx", None), {"data_dir": None})


def test_report_writes_the_page_of_the_evaluated_run(run_cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from convzoo import report

    evaluated = object()
    run = Spy(evaluated=evaluated)
    load = Spy(load=run)
    write = Spy(write_report=tmp_path / "rep\x1bort.html")
    monkeypatch.setattr(cli.runs.api, "load", load.load)
    monkeypatch.setattr(report, "write_report", write.write_report)
    assert run_cli("report", str(tmp_path), "--device", "cpu", "--data-dir", "d") == \
        (0, f"wrote {tmp_path}/rep\\x1bort.html\n", "")
    assert load.calls == [("load", (str(tmp_path), "cpu"), {})] and run.calls == [("evaluated", ("d",), {})]
    assert write.calls == [("write_report", (evaluated,), {})]


def test_compare_prints_its_table_and_writes_its_page(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import compare

    rows = [{"run": "a", "test_acc": 0.5}]
    spy = Spy(compare_runs=rows, write_comparison=(Path("c\x1b.html"), rows), format_table="a  0.5000")
    for name in ("compare_runs", "write_comparison", "format_table"):
        monkeypatch.setattr(compare, name, getattr(spy, name))
    assert run_cli("compare", "runs/a", "runs/b") == (0, "a  0.5000\nwrote c\\x1b.html\n", "")
    assert spy.calls == [("write_comparison", (["runs/a", "runs/b"], "compare.html"), {}),
                         ("format_table", (rows,), {})]
    spy.calls.clear()
    code, out, _ = run_cli("compare", "runs/a", "--json")  # the table only: no page
    assert (code, json.loads(out)) == (0, {"out": None, "runs": rows})
    assert spy.calls == [("compare_runs", (["runs/a"],), {})]
    spy.calls.clear()
    code, out, _ = run_cli("compare", "runs/a", "--json", "--out", "x.html")
    assert (code, json.loads(out)) == (0, {"out": "c\x1b.html", "runs": rows})
    assert spy.calls == [("write_comparison", (["runs/a"], "x.html"), {})]


@pytest.mark.parametrize("argv, call", [
    (["kernels", "r", "--layer", "3", "--out", "k.png"], ("show_kernels", ("r", "k.png"), {"layer": "3"})),
    (["kernels", "r"], ("show_kernels", ("r", None), {"layer": None})),
    (["features", "r", "i.png", "--channels", "4", "--invert", "yes", "--out", "f.png"],
     ("show_features", ("r", "i.png", "f.png"), {"invert": "yes", "channels": 4})),
    (["mistakes", "r", "--count", "5", "--device", "cpu", "--data-dir", "d", "--out", "m.png"],
     ("show_mistakes", ("r", "m.png"), {"count": 5, "device": "cpu", "data_dir": "d"})),
    (["confusion", "r", "--device", "cpu", "--data-dir", "d", "--out", "c.png"],
     ("show_confusion", ("r", "c.png"), {"device": "cpu", "data_dir": "d"})),
    (["curves", "r", "s", "--out", "cc.png"], ("show_curves", (["r", "s"], "cc.png"), {})),
    (["ops", "--out", "o.png"], ("show_ops", ("o.png",), {})),
])
def test_show_draws_what_it_is_asked_for(argv: list[str], call: tuple, run_cli: Cli,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import show

    names = ("show_kernels", "show_features", "show_mistakes", "show_confusion", "show_curves", "show_ops")
    spy = Spy(**{name: Path("pictures") / "p\x07.png" for name in names})
    for name in names:
        monkeypatch.setattr(show, name, getattr(spy, name))
    assert run_cli("show", *argv) == (0, f"wrote {Path('pictures')}/p\\x07.png\n", "")
    assert spy.calls == [call]


def test_train_dry_run_shows_the_plan_and_creates_nothing(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    class Plan:
        run_dir = Path("runs") / "lenet\x1b"

        def format(self) -> str:
            return "the plan\nin two lines"

        def to_json(self) -> dict:
            return {"run_dir": "runs/lenet-d2l-seed0"}

    spy = Spy(plan=Plan(), train=None)
    monkeypatch.setattr(train.api, "plan", spy.plan)
    monkeypatch.setattr(train.api, "train", spy.train)
    run_dir = "runs/lenet\\x1b"  # escaped
    assert run_cli("train", "lenet", "--dry-run", "--epochs", "4") == \
        (0, f"the plan\nin two lines\nrun directory: {run_dir} (not created)\n", "")
    assert spy.calls == [("plan", (), train.train_arguments(_train_args("lenet", "--epochs", "4")))]
    assert spy.calls[0][2]["epochs"] == 4
    assert run_cli("train", "--resume", "runs/a", "--dry-run")[1].endswith(
        f"run directory: {run_dir} (resumed by the command, left as it is)\n")
    assert spy.calls[-1][2]["resume"] is True
    code, out, _ = run_cli("train", "lenet", "--dry-run", "--json")
    assert (code, json.loads(out)) == (0, {"run_dir": "runs/lenet-d2l-seed0"})
    assert [name for name, _, _ in spy.calls] == ["plan"] * 3  # never trained


# --- data fetch | check | show | export -------------------------------------------------------------

def test_data_fetch_names_the_set_and_where_it_went(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import data

    spy = Spy(fetch_named=Path("cache") / "set")
    monkeypatch.setattr(data, "fetch_named", spy.fetch_named)
    assert run_cli("data", "fetch") == (0, f"Fashion-MNIST is in {Path('cache') / 'set'}\n", "")
    assert run_cli("data", "fetch", "mnist", "--dest", "d", "--mirror", "https://m.example") == \
        (0, f"mnist is in {Path('cache') / 'set'}\n", "")
    assert spy.calls == [("fetch_named", ("fashion-mnist", None), {"mirror": None}),
                         ("fetch_named", ("mnist", "d"), {"mirror": "https://m.example"})]


FILES = [{"file": "train-images", "path": "p/train-images", "ok": True, "count": 60000},
         {"file": "t10k-labels", "path": "p/t10k-labels", "ok": True}]
CACHED = [{"file": "a", "path": "c/a", "ok": True},
          {"file": "b", "path": "c/b", "ok": False, "problem": "its size changed"}]


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> Spy:
    import convzoo.cli.data as data_command
    from convzoo import data

    spy = Spy(check=[dict(row) for row in FILES], check_cache=CACHED, check_named=[dict(row) for row in FILES])
    monkeypatch.setattr(data, "check", spy.check)
    monkeypatch.setattr(data_command, "check_cache", spy.check_cache)
    monkeypatch.setattr(data_command, "check_named", spy.check_named)
    return spy


def test_data_check_lists_each_file_and_cached_copy(run_cli: Cli, checked: Spy) -> None:
    assert run_cli("data", "check", "--data-dir", "p") == (0, """\
ok  p/train-images  60,000 items
ok  p/t10k-labels
ok  c/a  (cached copy)
BAD c/b  (cached copy: its size changed; removed, the next read decompresses the file again)
""", "")
    assert checked.calls == [("check", ("p",), {}), ("check_cache", (), {})]
    code, out, _ = run_cli("data", "check", "--data", "fashion-mnist", "--json")
    assert (code, json.loads(out)) == (0, [*FILES, *({**row, "cache": True} for row in CACHED)])
    assert checked.calls[-2] == ("check", (None,), {})


def test_data_check_of_another_published_set(run_cli: Cli, checked: Spy) -> None:
    assert run_cli("data", "check", "--data", "mnist", "--data-dir", "p") == \
        (0, "ok  p/train-images  60,000 items\nok  p/t10k-labels\n", "")
    assert checked.calls == [("check_named", ("mnist", "p"), {})]


def test_data_check_names_the_bad_files_and_how_to_fetch_them_again(run_cli: Cli, checked: Spy) -> None:
    for row in checked.returns["check"] + checked.returns["check_named"]:
        row["ok"] = False
    code, out, err = run_cli("data", "check")
    assert (code, out.splitlines()[:2]) == (2, ["BAD p/train-images  60,000 items", "BAD p/t10k-labels"])
    assert err == "error: checksum mismatch: train-images, t10k-labels (re-download with 'convzoo data fetch')\n"
    code, _, err = run_cli("data", "check", "--data", "kmnist")
    assert err == "error: checksum mismatch: train-images, t10k-labels (re-download with 'convzoo data fetch " \
                  "kmnist')\n"
    checked.returns["check"][1]["ok"] = True
    assert run_cli("data", "check")[2] == "error: checksum mismatch: train-images (re-download with 'convzoo data " \
                                          "fetch')\n"


class Folder:
    """What ``data.open_data`` gives for a folder of colour images in two classes."""

    name, channels, size, num_classes, classes, notes = "pets", 3, 32, 2, ("cat", "dog"), ("a note",)
    train_images = torch.tensor([[[[10]], [[20]], [[30]]]] * 1234, dtype=torch.uint8)  # (N, 3, 1, 1)
    train_labels = torch.zeros(1234, dtype=torch.int64)
    test_images = torch.tensor([[[[255]], [[255]], [[255]]], [[[1]], [[0]], [[0]]]], dtype=torch.uint8)
    test_labels = torch.tensor([1, 0])

    def describe(self) -> dict:
        return {"name": "pets"}


def test_data_check_of_a_folder_summarizes_it(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import data

    spy = Spy(open_data=Folder())
    monkeypatch.setattr(data, "open_data", spy.open_data)
    assert run_cli("data", "check", "--data", "pets/") == \
        (0, "ok pets: 1,234 training and 2 test images, 3 x 32 x 32, 2 classes (cat, dog)\n", "")
    assert spy.calls == [("open_data", ("pets/",), {"data_dir": None, "grayscale": False, "size": None,
                                                      "test_fraction": 0.2, "seed": 0})]
    code, out, _ = run_cli("data", "check", "--data", "pets/", "--json", "--grayscale", "--size", "16",
                           "--test-fraction", "0.5", "--seed", "3", "--data-dir", "d")
    assert (code, json.loads(out)) == (0, {"name": "pets", "notes": ["a note"]})
    assert spy.calls[-1] == ("open_data", ("pets/",), {"data_dir": "d", "grayscale": True, "size": 16,
                                                         "test_fraction": 0.5, "seed": 3})


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Spy:
    from convzoo import data, figures

    spy = Spy(samples_figure="figure", save_figure=None, open_data=Folder(),
              load_split=(torch.arange(3 * 4, dtype=torch.uint8).view(3, 2, 2), torch.tensor([7, 8, 9])))
    for module, name in ((figures, "samples_figure"), (figures, "save_figure"), (data, "open_data"),
                         (data, "load_split")):
        monkeypatch.setattr(module, name, getattr(spy, name))
    return spy


def test_data_show_draws_the_first_images_of_a_split(run_cli: Cli, drawn: Spy) -> None:
    from convzoo import data

    assert run_cli("data", "show", "--out", "s\x1b.png", "--count", "2", "--split", "test", "--data-dir", "d") == \
        (0, "wrote s\\x1b.png\n", "")
    (_, split, _), (_, (images, labels), kwargs), save = drawn.calls
    assert split == ("test", "d")
    assert images.tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]] and labels.tolist() == [7, 8]
    assert kwargs == {"classes": data.CLASSES} and save == ("save_figure", ("figure", Path("s\x1b.png")), {})
    run_cli("data", "show", "--out", "s.png")
    assert drawn.calls[-3][1] == ("train", None) and len(drawn.calls[-2][1][0]) == 3  # 40 asked for, 3 there


def test_data_show_of_a_colour_folder_draws_luma(run_cli: Cli, drawn: Spy) -> None:
    assert run_cli("data", "show", "--data", "pets/", "--out", "s.png", "--split", "test")[0] == 0
    (_, _, opened), (_, (images, labels), kwargs), _ = drawn.calls
    assert opened == {"data_dir": None, "grayscale": False, "size": None, "test_fraction": 0.2, "seed": 0}
    # 0.299 R + 0.587 G + 0.114 B: white stays 255, pure red 1 becomes 0.299, rounded to 0
    assert images.tolist() == [[[255]], [[0]]] and images.dtype == torch.uint8
    assert labels.tolist() == [1, 0] and kwargs == {"classes": ("cat", "dog")}
    run_cli("data", "show", "--data", "pets/", "--out", "s.png", "--count", "1")
    assert drawn.calls[-2][1][0].tolist() == [[[18]]]  # the first training image: 2.99 + 11.74 + 3.42 = 18.15


def test_luma_weights() -> None:
    from convzoo.cli.data import _luma

    pixels = torch.tensor([[[[10]], [[20]], [[30]]], [[[0]], [[1]], [[0]]], [[[255]], [[255]], [[255]]]],
                          dtype=torch.uint8)
    # 2.99 + 11.74 + 3.42 = 18.15; 0.587 rounds to 1; the weights sum to 1
    assert _luma(pixels).tolist() == [[[18]], [[1]], [[255]]]


@pytest.mark.parametrize("argv, message", [
    (["--count", "0"], "--count must be between 1 and 1,000, got 0"),
    (["--count", "1001"], "--count must be between 1 and 1,000, got 1,001"),
])
def test_data_show_refuses_a_count_out_of_range(argv: list[str], message: str, run_cli: Cli, drawn: Spy) -> None:
    assert run_cli("data", "show", "--out", "s.png", *argv) == (2, "", f"error: {message}\n")
    assert drawn.calls == []


def test_data_show_of_an_empty_split_is_refused(run_cli: Cli, drawn: Spy) -> None:
    drawn.returns["load_split"] = (torch.zeros(0, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    assert run_cli("data", "show", "--out", "s.png", "--split", "test") == \
        (2, "", "error: the test split is empty\n")


def test_data_export_writes_a_tree(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import data

    found = Folder()
    spy = Spy(open_data=found, export_tree=Path("tr\x1bee"))
    monkeypatch.setattr(data, "open_data", spy.open_data)
    monkeypatch.setattr(data, "export_tree", spy.export_tree)
    assert run_cli("data", "export", "mnist", "out", "--data-dir", "d") == \
        (0, "wrote 1,234 training and 2 test images to tr\\x1bee\n", "")
    assert spy.calls == [("open_data", ("mnist",), {"data_dir": "d"}), ("export_tree", (found, "out"), {})]


# --- explore ------------------------------------------------------------------------------------------

class Server:
    address, remote, served = "http://127.0.0.1:8765/s3cret/", False, 0

    def serve(self) -> None:
        Server.served += 1


def test_explore_says_where_to_open_it(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    from convzoo import explore

    spy = Spy(open_server=Server(), open=None)
    monkeypatch.setattr(explore, "open_server", spy.open_server)
    monkeypatch.setattr(webbrowser, "open", spy.open)
    served = Server.served
    assert run_cli("explore") == (0, "convzoo explore: the operations (give a run directory to look inside one)\n"
                                     "open http://127.0.0.1:8765/s3cret/\n(Ctrl-C stops it)\n", "")
    assert spy.calls == [("open_server", (None,), {"device": "auto", "data_dir": None, "host": "127.0.0.1",
                                                   "port": 0, "allow_remote": False})]
    assert Server.served == served + 1
    code, out, _ = run_cli("explore", "runs/a", "--device", "cpu", "--data-dir", "d", "--port", "8765", "--open")
    assert out.splitlines()[0] == "convzoo explore: the run runs/a"
    assert spy.calls[1:] == [("open_server", ("runs/a",), {"device": "cpu", "data_dir": "d", "host": "127.0.0.1",
                                                           "port": 8765, "allow_remote": False}),
                             ("open", ("http://127.0.0.1:8765/s3cret/",), {})]


def test_explore_shows_its_address_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import explore

    log = Flushed()
    monkeypatch.setattr(explore, "open_server", Spy(open_server=Server()).open_server)
    monkeypatch.setattr(sys, "stdout", log)
    assert cli.main(["explore"]) == 0
    assert log.flushed[0].endswith("(Ctrl-C stops it)\n")  # a log file has the address while the server runs


def test_explore_on_a_remote_address_warns(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import explore

    server = Server()
    server.remote = True
    spy = Spy(open_server=server)
    monkeypatch.setattr(explore, "open_server", spy.open_server)
    code, out, err = run_cli("explore", "--host", "0.0.0.0", "--allow-remote")
    assert err == "warning: the explorer listens on 0.0.0.0, reachable from other machines; anyone with the address " \
                  "below can use it\n"
    assert spy.calls[0][2]["host"] == "0.0.0.0" and spy.calls[0][2]["allow_remote"] is True


def test_explore_without_its_packages_says_how_to_install_them(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "convzoo.explore", None)
    assert run_cli("explore") == (2, "", "error: convzoo explore needs the explore extra (convzoo.explore is missing): "
                                         "pip install 'convzoo[explore]'\n")


def test_predict_errors_name_their_argument(run_cli: Cli) -> None:
    with pytest.raises(ConfigError) as caught:
        run_cli("--debug", "predict", "runs/a")
    assert caught.value.field == "images"


def test_predict_top_k_is_checked_against_the_runs_own_classes(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(read_run_config="config", run_classes=["cat", "dog", "bird"], load=None)
    monkeypatch.setattr(cli.evaluate, "read_run_config", spy.read_run_config)
    monkeypatch.setattr(cli.evaluate, "run_classes", spy.run_classes)
    monkeypatch.setattr(cli.evaluate.api, "load", spy.load)
    assert run_cli("predict", "runs/pets", "a.png", "--top-k", "4") == \
        (2, "", "error: --top-k must be between 1 and 3, got 4\n")
    assert spy.calls == [("read_run_config", ("runs/pets",), {}), ("run_classes", ("config",), {})]
