"""The ``convzoo`` command: argument parsing and error reporting over the library.

    convzoo models                       the zoo: parameters, native input, MACs
    convzoo summary lenet                the seed's layer-by-layer table
    convzoo train lenet                  the book's recipe on Fashion-MNIST
    convzoo eval runs/lenet              test accuracy, per class, confusion.png
    convzoo predict runs/lenet shoe.png  class and probability per image
    convzoo data fetch | check | show    the data set
    convzoo show | report | compare | export   pictures, report.html, runs compared, ONNX (cli_runs.py)

Data-parallel training on N GPUs of one machine (docs/distributed.md for several machines):

    torchrun --standalone --nproc_per_node=N -m convzoo train resnet18 --recipe fast

A mistake the user can make ends in one line ``error: ...`` on stderr and exit status 2
(``--debug`` shows the traceback); a diverged run exits 3, an interrupted one 130 (SIGINT) or
143 (SIGTERM), saying how to resume it. docs/reliability.md lists every case.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence

from .errors import UserError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other user error
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _print_json(obj: object) -> None:
    print(json.dumps(obj))


# --- models and summary ---------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> None:
    from .models import get_model_spec, list_models
    from .summary import summarize_model

    rows = []
    for name in list_models():
        spec = get_model_spec(name)
        summary = summarize_model(name)
        rows.append({"name": name, "params": summary.total_params, "input_size": spec.input_size,
                     "macs": summary.total_macs, "description": spec.description})
    if args.json:
        _print_json(rows)
        return
    print(f"{'model':<12} {'params':>12} {'input':>7} {'MACs':>15}  description")
    for r in rows:
        print(f"{r['name']:<12} {r['params']:>12,} {r['input_size']:>7} {r['macs']:>15,}  {r['description']}")


def cmd_summary(args: argparse.Namespace) -> None:
    from .summary import summarize_model

    summary = summarize_model(args.model, input_size=args.input_size, in_channels=args.in_channels,
                              num_classes=args.num_classes)
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(summary.format())


# --- training and evaluation ----------------------------------------------------------------

# What --resume may change: the length of the run, its learning rate (to recover from a divergence),
# and where it runs; everything else is the run's own configuration.
RESUME_OVERRIDES = ("epochs", "lr", "device", "data_dir")
FIXED_ON_RESUME = ("recipe", "out", "overwrite", "batch_size", "optimizer", "momentum", "weight_decay", "schedule",
                   "label_smoothing", "augment", "tta", "init", "resize", "seed", "backend", "channels_last", "amp",
                   "compile", "cuda_graphs", "autotune", "limit_train", "limit_test", "deterministic")


def cmd_train(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from .train import ConfigError, fit, read_run_config, recipe

    quiet = (lambda _msg: None) if args.json else print
    command = shlex.join(["convzoo", *sys.argv[1:]])
    if args.resume:
        config = read_run_config(args.resume)["config"]
        if args.model and args.model != config.model:
            raise ConfigError(f"{args.resume} is a run of {config.model}, not {args.model}")
        fixed = [name for name in FIXED_ON_RESUME if getattr(args, name) is not None]
        if fixed:
            options = ", ".join("--" + name.replace("_", "-") for name in fixed)
            raise ConfigError(f"--resume continues a run as it was configured: {options} cannot change "
                              "(only --epochs, --lr, --device and --data-dir can)")
        config = replace(config, **{name: getattr(args, name) for name in RESUME_OVERRIDES
                                    if getattr(args, name) is not None})
        result = fit(config, args.resume, resume=True, log=quiet, command=command)
    else:
        if not args.model:
            raise ConfigError("train needs a MODEL (see 'convzoo models') or --resume RUN_DIR")
        config = recipe(
            args.model, args.recipe or "d2l", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
            schedule=args.schedule, label_smoothing=args.label_smoothing, augment=args.augment, tta=args.tta,
            init=args.init,
            resize=args.resize, seed=args.seed, device=args.device, backend=args.backend,
            limit_train=args.limit_train, limit_test=args.limit_test, data_dir=args.data_dir,
            channels_last=args.channels_last, amp=args.amp, compile=args.compile, deterministic=args.deterministic,
            cuda_graphs=args.cuda_graphs, autotune=args.autotune,
        )
        out = args.out or f"runs/{config.model}-{config.recipe}-seed{config.seed}"
        result = fit(config, out, overwrite=bool(args.overwrite), log=quiet, command=command)
    if _rank_prefix():  # the other ranks of a torchrun job: rank 0 reports
        return
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"test accuracy {result.test_acc:.4f} after {result.epochs} epochs, {result.train_seconds:.1f} s")
        print(f"run directory: {result.run_dir}  (curves.png, confusion.png, metrics.jsonl, model.safetensors)")


def cmd_eval(args: argparse.Namespace) -> None:
    from .data import CLASSES
    from .show import show_confusion
    from .train import evaluate_run

    result = evaluate_run(args.run_dir, args.device, args.data_dir)
    out = show_confusion(args.run_dir, evaluation=result)
    per_class = dict(zip(CLASSES, (round(a, 4) for a in result.per_class_accuracy)))
    n = int(result.confusion.sum())
    if args.json:
        _print_json({"run_dir": args.run_dir, "test_acc": result.accuracy, "test_loss": round(result.loss, 6),
                     "num_examples": n, "per_class_accuracy": per_class, "confusion": str(out)})
        return
    print(f"test accuracy {result.accuracy:.4f} on {n:,} images (loss {result.loss:.4f})")
    for name, acc in per_class.items():
        print(f"  {name:<12} {acc:.4f}")
    print(f"confusion matrix: {out}")


def cmd_predict(args: argparse.Namespace) -> None:
    import torch

    from .data import CLASSES, to_input
    from .images import load_image
    from .train import load_run, scores

    config, model, device = load_run(args.run_dir, args.device)
    pixels = torch.stack([load_image(path, invert=args.invert) for path in args.images]).to(device)
    with torch.no_grad():  # scored as in the run's evaluation (float32 unless it trained with autocast)
        probs = torch.softmax(scores(model, to_input(pixels, config.resize), config.amp, config.tta).float(), dim=1)
    probs = probs.cpu()
    top_p, top_i = probs.max(dim=1)
    rows = [{"image": str(path), "class": CLASSES[int(i)], "label": int(i), "probability": round(float(p), 4)}
            for path, p, i in zip(args.images, top_p, top_i)]
    if args.json:
        _print_json(rows)
        return
    for r in rows:
        print(f"{r['image']}: {r['class']} ({r['probability']:.1%})")


# --- data -------------------------------------------------------------------------------------

def cmd_data(args: argparse.Namespace) -> None:
    from . import data
    from .figures import samples_figure, save_figure

    if args.data_command == "fetch":
        dest = data.fetch(args.dest, mirror=args.mirror or data.DEFAULT_MIRROR)
        print(f"Fashion-MNIST is in {dest}")
    elif args.data_command == "check":
        rows = data.check(args.data_dir)
        if args.json:
            _print_json(rows)
        else:
            for r in rows:
                print(f"{'ok ' if r['ok'] else 'BAD'} {r['path']}  {r['count']:,} items")
        if not all(r["ok"] for r in rows):
            bad = ", ".join(r["file"] for r in rows if not r["ok"])
            raise data.DataError(f"checksum mismatch: {bad} (re-download with 'convzoo data fetch')")
    elif args.data_command == "show":
        images, labels = data.load_split(args.split, args.data_dir)
        save_figure(samples_figure(images[: args.count], labels[: args.count]), args.out)
        print(f"wrote {args.out}")


# --- parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .train import INITS, OPTIMIZERS, SCHEDULES

    parser = _Parser(prog="convzoo", description="Classic CNNs and their operations, trained on Fashion-MNIST.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("models", help="list the model zoo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = commands.add_parser("summary", help="layer-by-layer output shapes, parameters and MACs")
    p.add_argument("model")
    p.add_argument("--input-size", type=_int, help="input side (default: the model's native size)")
    p.add_argument("--in-channels", type=_int, default=1)
    p.add_argument("--num-classes", type=_int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = commands.add_parser("train", help="train a model on Fashion-MNIST")
    p.add_argument("model", nargs="?", help="a name from 'convzoo models' (optional with --resume)")
    p.add_argument("--recipe", help="d2l (the book's, default) or fast")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/MODEL-RECIPE-seedN)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing run directory")
    p.add_argument("--json", action="store_true", help="print only a JSON summary line")
    g = p.add_argument_group("recipe overrides")
    g.add_argument("--epochs", type=_int)
    g.add_argument("--batch-size", type=_int)
    g.add_argument("--lr", type=_float)
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--momentum", type=_float)
    g.add_argument("--weight-decay", type=_float)
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument("--label-smoothing", type=_float)
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random flips and 2-pixel shifts of the training images (default: on with --recipe fast)")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: score each test image and its mirror image (default: on with "
                        "--recipe fast when it augments)")
    g.add_argument("--init", choices=INITS, help="weights: xavier (the book's), kaiming (He, deep ReLU nets), default")
    g.add_argument("--resize", type=_int, help="input side the images are resized to")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=_int)
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument("--backend", choices=("torch", "scratch"), help="torch.nn layers or convzoo's from-scratch ops")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout (default on; faster convolutions)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast on the CPU or CUDA (default: on with --recipe fast, off with d2l)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default off)")
    g.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="on CUDA, record the training step once as a CUDA graph and replay it: one launch per step "
                        "instead of hundreds (default: on in one process without --compile)")
    g.add_argument("--autotune", action=argparse.BooleanOptionalAction, default=None,
                   help="on CUDA, time cuDNN's convolution algorithms on each new shape and keep the fastest "
                        "(default on; off saves seconds of start-up in short runs of many-layer networks)")
    g.add_argument("--limit-train", type=_int, metavar="N", help="train on the first N images")
    g.add_argument("--limit-test", type=_int, metavar="N", help="evaluate on the first N images")
    g.add_argument("--data-dir", help="directory with the four Fashion-MNIST files")
    g.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic kernels and a fixed thread count: a resumed run ends with the weights of an "
                        "uninterrupted one (bitwise on the CPU); can be slower")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("eval", help="evaluate a run on the test set (writes confusion.png)")
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("predict", help="classify image files with a trained run")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="make the object light on dark like Fashion-MNIST (auto: when the border is light)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser("data", help="fetch, check or look at Fashion-MNIST")
    data_commands = p.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    d = data_commands.add_parser("fetch", help="download into the cache, verifying checksums")
    d.add_argument("--dest", help="directory (default: the user cache)")
    d.add_argument("--mirror", default=None, help="base URL of a mirror")
    d = data_commands.add_parser("check", help="verify the checksums of the files found")
    d.add_argument("--data-dir")
    d.add_argument("--json", action="store_true")
    d = data_commands.add_parser("show", help="draw a grid of samples with their class names")
    d.add_argument("--out", required=True, help="PNG file to write")
    d.add_argument("--split", choices=("train", "test"), default="train")
    d.add_argument("--count", type=_int, default=40)
    d.add_argument("--data-dir")
    p.set_defaults(func=cmd_data)

    from .cli_runs import add_commands  # show, report, compare, export

    add_commands(commands)
    return parser


def _one_line(exc: BaseException) -> str:  # the whole message folded into one line
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _rank_prefix() -> str:
    """``rank N: `` in the other processes of a torchrun job (rank 0 reports as a single process does)."""
    rank = os.environ.get("RANK", "").strip()
    return f"rank {rank}: " if rank.isdigit() and int(rank) > 0 else ""


def main(argv: Sequence[str] | None = None) -> int:
    # Large CPU tensors (batches, im2col columns) on transparent huge pages: PyTorch's allocator
    # reads this once, when torch starts, which is below (build_parser imports it).
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "device", "auto") is None:
        args.device = None if args.command == "train" else "auto"
    try:
        args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"{_rank_prefix()}error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a RunInterrupted says what the run directory keeps
        if not _rank_prefix():  # every rank of a torchrun job was interrupted; rank 0 speaks for them
            print(f"error: {_one_line(exc) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
