"""``convzoo export``: a run's model as ONNX or TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse

from ..escape import terminal
from ..export import FORMATS, export_run
from .common import print_json


def cmd_export(args: argparse.Namespace) -> None:
    result = export_run(args.run_dir, args.format, args.out, data_dir=args.data_dir)
    if args.json:
        print_json(result.to_json())
        return
    sizes = " and ".join(map(str, result.batch_sizes))
    side = result.input_size
    print(f"wrote {terminal(result.path)} ({result.format}, input N x {result.channels} x {side} x {side}); "
          f"max |logit difference| to PyTorch {result.max_abs_diff:.2g} on batches of {sizes} test images")


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="export a run's model to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--out", help="file to write (default: RUN_DIR/model.onnx or RUN_DIR/model.pt)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-dir", help="where the run's data files are now (default: where they were)")
    p.set_defaults(func=cmd_export)
