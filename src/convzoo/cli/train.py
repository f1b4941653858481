"""``convzoo train``: a recipe, overridden by flags generated from ``TrainConfig``'s fields."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from dataclasses import Field
from pathlib import Path

from .. import api
from ..config import RENAMED, flag_name, option_fields, recipe_fields
from ..errors import ConfigError
from ..escape import terminal
from ..estimate import Plan
from ..models import list_models
from .common import parse_float, parse_int, print_json, rank_prefix

# The fields from here on say where and how a run executes; those before it override the recipe.
FIRST_RUN_FIELD = "seed"
# Older names of flags, still taken (``config.RENAMED`` reads them in config.json and from Python).
ALIASES = {new: [flag_name(old)] for old, new in RENAMED.items()}


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field (``option_fields``), default None: the recipe's value stands."""
    group = p.add_argument_group("recipe overrides", "each recipe's values: 'convzoo recipes MODEL'; the whole "
                                  "configuration and its cost: --dry-run")
    for f in option_fields():
        if f.name == FIRST_RUN_FIELD:
            group = p.add_argument_group("run")
        group.add_argument(flag_name(f.name), *ALIASES.get(f.name, ()), dest=f.name, default=None, **_flag_kwargs(f))


def _flag_kwargs(f: Field) -> dict:
    meta, kind = f.metadata, str(f.type).split(" | ")[0]
    kwargs: dict = {"help": meta["help"] + _default_text(f)}
    if kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif meta.get("choices"):
        kwargs["choices"] = meta["choices"]
    else:
        kwargs["type"] = {"int": parse_int, "float": parse_float, "str": str}[kind]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    return kwargs


def _default_text(f: Field) -> str:
    """What a flag's help says of its default: the recipe's, or the field's own."""
    if f.name in recipe_fields():
        return " (default: the recipe's)"
    if f.default is None:
        return ""
    value = ("on" if f.default else "off") if isinstance(f.default, bool) else f.default
    return f" (default: {value})"


def train_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The ``train`` command's arguments as those of ``api.train`` and ``api.plan`` (and ``rundir.resolve_run``)."""
    if args.model is None and args.tensorboard in list_models():  # `--tensorboard lenet`: the flag took the model
        args.model, args.tensorboard = args.tensorboard, ""
    if args.resume is not None and args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ConfigError(f"--resume continues {args.resume} in place: --out {args.out} names another directory",
                          field="out")
    resume = args.resume is not None
    return {"model": args.model, "out": args.resume if resume else args.out, "recipe": args.recipe, "resume": resume,
            **{f.name: getattr(args, f.name) for f in option_fields()}}


def cmd_train(args: argparse.Namespace) -> None:
    arguments = train_arguments(args)
    if args.dry_run:
        show_plan(api.plan(**arguments), resume=arguments["resume"], as_json=args.json)
        return
    tensorboard = None
    if args.tensorboard is not None and not rank_prefix():  # rank 0 of a torchrun job logs for all
        tensorboard = args.tensorboard or True  # True: next to the run directory
    quiet = (lambda _msg: None) if args.json else functools.partial(print, flush=True)  # flushed: a log file
    run = api.train(**arguments, overwrite=bool(args.overwrite), tensorboard=tensorboard, log=quiet,
                    command=shlex.join(["convzoo", *sys.argv[1:]]))
    if rank_prefix():  # the other ranks of a torchrun job: rank 0 reports
        return
    if args.json:
        print_json(run.to_json())
    else:
        validation = "" if run.val_acc is None else f" (validation accuracy {run.val_acc:.4f})"
        print(f"test accuracy {run.test_acc:.4f}{validation} after {run.epochs} epochs, {run.train_seconds:.1f} s")
        print(f"run directory: {terminal(run.run_dir)}  (open {terminal(run.run_dir / 'report.html')}: curves, "
              "confusion matrix, mistakes)")


def show_plan(plan: Plan, *, resume: bool, as_json: bool) -> None:
    """``--dry-run``: the resolved config and what the run would cost here, from a few timed steps on random data."""
    if as_json:
        print_json(plan.to_json())
        return
    print(plan.format())
    state = "resumed by the command, left as it is" if resume else "not created"
    print(f"run directory: {terminal(plan.run_dir)} ({state})")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train a model on Fashion-MNIST (or --data)")
    p.add_argument("model", nargs="?", help="a name from 'convzoo models' (optional with --resume)")
    p.add_argument("--recipe", help="d2l (the book's, default) or fast")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/MODEL-RECIPE-seedN)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing run directory")
    p.add_argument("--json", action="store_true", help="print only a JSON summary line")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration and what the run would "
                   "cost (parameters, MACs, memory, time from a few timed steps); create nothing")
    p.add_argument("--tensorboard", nargs="?", const="", metavar="DIR", help="log scalars for TensorBoard to DIR "
                   "(default: tensorboard/RUN_NAME next to the run directory; give another as --tensorboard=DIR); "
                   "needs convzoo[tensorboard]")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)
