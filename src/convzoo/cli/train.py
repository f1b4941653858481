"""``convzoo train``: a recipe, overridden by flags generated from ``TrainConfig``'s fields."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from dataclasses import Field, replace
from pathlib import Path

from ..checkpoint import saved_epoch
from ..config import TrainConfig, flag_name, option_fields, recipe, recipe_fields, resume_changes
from ..errors import ConfigError
from ..estimate import plan_run
from ..progress import progress_for
from ..rundir import read_run_config
from ..train import fit
from .common import parse_float, parse_int, print_json, rank_prefix

# The fields from here on say where and how a run executes; those before it override the recipe.
FIRST_RUN_FIELD = "seed"


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field (``option_fields``), default None: the recipe's value stands."""
    group = p.add_argument_group("recipe overrides", "each recipe's values: 'convzoo recipes MODEL'; the whole "
                                  "configuration and its cost: --dry-run")
    for f in option_fields():
        if f.name == FIRST_RUN_FIELD:
            group = p.add_argument_group("run")
        group.add_argument(flag_name(f.name), dest=f.name, default=None, **_flag_kwargs(f))


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


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, str, bool]:
    """The run's config, its directory, and whether it resumes, from the parsed ``train`` arguments."""
    given = {f.name: getattr(args, f.name) for f in option_fields()}
    if not args.resume:
        if not args.model:
            raise ConfigError("train needs a MODEL (see 'convzoo models') or --resume RUN_DIR")
        config = recipe(args.model, args.recipe or "d2l", **given)
        return config, args.out or f"runs/{config.model}-{config.recipe}-seed{config.seed}", False
    if args.overwrite:
        raise ConfigError("--overwrite replaces a run and --resume continues one: give one of them")
    config = read_run_config(args.resume)["config"]
    if args.model and args.model != config.model:
        raise ConfigError(f"{args.resume} is a run of {config.model}, not {args.model}")
    if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ConfigError(f"--resume continues {args.resume} in place: --out {args.out} names another directory")
    config = replace(config, **resume_changes(config, {"recipe": args.recipe, **given}))
    config.validate()
    return config, args.resume, True


def cmd_train(args: argparse.Namespace) -> None:
    quiet = (lambda _msg: None) if args.json else functools.partial(print, flush=True)  # flushed: a log file
    command = shlex.join(["convzoo", *sys.argv[1:]])
    config, out, resume = config_from_args(args)
    if args.dry_run:
        show_plan(config, out, resume, as_json=args.json)
        return
    tensorboard = None
    if args.tensorboard is not None and not rank_prefix():  # rank 0 of a torchrun job logs for all
        tensorboard = args.tensorboard or Path(out).parent / "tensorboard" / Path(out).name
    view = progress_for(None, tensorboard=tensorboard)
    result = fit(config, out, resume=resume, overwrite=bool(args.overwrite), log=quiet, command=command,
                 progress=view)
    if rank_prefix():  # the other ranks of a torchrun job: rank 0 reports
        return
    if args.json:
        print_json(result.to_json())
    else:
        print(f"test accuracy {result.test_acc:.4f} after {result.epochs} epochs, {result.train_seconds:.1f} s")
        print(f"run directory: {result.run_dir}  (curves.png, confusion.png, metrics.jsonl, model.safetensors)")


def show_plan(config: TrainConfig, out: str, resume: bool, *, as_json: bool) -> None:
    """``--dry-run``: the resolved config and what the run would cost here, from a few timed steps on random data."""
    plan = plan_run(config, done_epochs=(saved_epoch(Path(out) / "checkpoint.safetensors") or 0) if resume else 0)
    if as_json:
        print_json({**plan.to_json(), "run_dir": str(out)})
        return
    print(plan.format())
    print(f"run directory: {out} ({'resumed by the command, left as it is' if resume else 'not created'})")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train a model on Fashion-MNIST")
    p.add_argument("model", nargs="?", help="a name from 'convzoo models' (optional with --resume)")
    p.add_argument("--recipe", help="d2l (the book's, default) or fast")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/MODEL-RECIPE-seedN)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing run directory")
    p.add_argument("--json", action="store_true", help="print only a JSON summary line")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration and what the run would "
                   "cost (parameters, MACs, memory, time from a few timed steps); create nothing")
    p.add_argument("--tensorboard", nargs="?", const="", metavar="DIR", help="log scalars for TensorBoard to DIR "
                   "(default: tensorboard/RUN_NAME next to the run directory); needs convzoo[tensorboard]")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)
