"""``convzoo models`` and ``convzoo summary``: the zoo and its layer tables."""

from __future__ import annotations

import argparse

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
