"""``convzoo models``, ``convzoo summary`` and ``convzoo recipes``: the zoo, its layer tables and its recipes."""

from __future__ import annotations

import argparse

from ..api import recipes
from ..config import VERIFIED_FAST, flag_name
from ..models import get_model_spec, list_models
from ..summary import summarize_model
from .common import parse_int, print_json


def cmd_models(args: argparse.Namespace) -> None:
    rows = []
    for name in list_models():
        spec = get_model_spec(name)
        summary = summarize_model(name)
        rows.append({"name": name, "params": summary.total_params, "input_size": spec.input_size,
                     "macs": summary.total_macs, "description": spec.description})
    if args.json:
        print_json(rows)
        return
    print(f"{'model':<12} {'params':>12} {'input':>7} {'MACs':>15}  description")
    for r in rows:
        print(f"{r['name']:<12} {r['params']:>12,} {r['input_size']:>7} {r['macs']:>15,}  {r['description']}")


def cmd_summary(args: argparse.Namespace) -> None:
    summary = summarize_model(args.model, input_size=args.input_size, in_channels=args.in_channels,
                              num_classes=args.num_classes)
    if args.json:
        print_json(summary.to_dict())
    else:
        print(summary.format())


def cmd_recipes(args: argparse.Namespace) -> None:
    table = {name: recipes(name) for name in ([args.model] if args.model else list_models())}
    if args.json:
        print_json(table)
        return
    for i, (model, settings) in enumerate(table.items()):
        names = list(settings)
        print(("\n" if i else "") + (f"{model:<20}" + "".join(f"{name:<12}" for name in names)).rstrip())
        for field in settings[names[0]]:
            cells = "".join(f"{_value(settings[name][field]):<12}" for name in names)
            print(f"  {flag_name(field):<18}{cells}".rstrip())
        verified = VERIFIED_FAST.get(model)
        print(f"  fast: verified, {verified}" if verified else
              "  fast: not verified at full length (a starting point; the README's Results say what was measured)")


def _value(value: object) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) \
        else str(value)


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = commands.add_parser("summary", help="layer-by-layer output shapes, parameters and MACs")
    p.add_argument("model")
    p.add_argument("--input-size", type=parse_int, help="input side (default: the model's native size)")
    p.add_argument("--in-channels", type=parse_int, default=1)
    p.add_argument("--num-classes", type=parse_int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = commands.add_parser("recipes", help="the settings of each recipe (d2l, the book's; fast) for each model")
    p.add_argument("model", nargs="?", help="one model (default: every model)")
    p.add_argument("--json", action="store_true", help="print {model: {recipe: {setting: value}}}")
    p.set_defaults(func=cmd_recipes)
