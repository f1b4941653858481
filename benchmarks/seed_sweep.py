"""How often a recipe leaves a network at chance, and why: seeds x variants, with what the network looks like inside.

    # on a CPU, at a reduced size and length (what benchmarks/results/cpu/seed-sweep.json holds)
    python benchmarks/seed_sweep.py --models nin googlenet --resize nin=67 googlenet=32 \
        --limit-train 6400 --limit-test 1000 --epochs 2 --threads 1 --out benchmarks/results/cpu/seed-sweep.json
    # on a GPU, at the book's size, the book's recipe against a proposed fix (as gpu_suite.py runs it)
    python benchmarks/seed_sweep.py --models nin --variants book init=kaiming --epochs 4 --amp --cuda-graphs \
        --out results/seed-sweep.json

Each run trains ``--model`` with the book's recipe (``d2l``; ``--recipe`` picks another) changed by
one *variant*, once per seed, as ``convzoo train`` does (same seeding, initialisation, batches and
``convzoo.step.TrainStep``; CUDA graphs on CUDA). A variant is ``book`` (the recipe unchanged) or
comma-separated ``key=value`` pairs: any ``TrainConfig`` field (``lr=0.05``, ``init=kaiming``),
``lr_scale=0.5`` (the recipe's learning rate times 0.5), ``bias=zero`` (zero every bias after the
initialisation; the book's Xavier init leaves PyTorch's default biases) and ``last_relu=off`` (NiN:
no ReLU between the last convolution and the global average pool, so a logit can be negative).

Between steps (at initialisation, after steps 1, 5, 20 and 100 and after every epoch) a probe
batch of 256 training images goes through the network in eval mode, and the run records:

* ``logit_spread``: the standard deviation of the logits over the classes, per image, averaged;
  ``logit_signal``: their standard deviation over the images, per class, averaged. A signal of
  ~0 means the output does not depend on the input: it vanished on the way through, and the loss
  sits at ln 10 until training has grown it (how fast it grows is the length of that plateau).
* ``dead``: the fraction of convolution channels (each followed by a ReLU) whose output is <= 0
  for every probe image and position: they pass no gradient. ``dead_last``: the same for the
  last convolution (NiN: its channels are the classes).
* after step 1, ``update_ratio``: lr x |gradient| / |weight| of the first and the last weight.

A run's ``outcome``: ``learned``, ``stuck`` (test accuracy at chance in every epoch, as
``convzoo.train.not_learning`` says), ``collapsed`` (above chance, then back at it) or
``diverged`` (a non-finite loss). The JSON (machine, versions, commit, command, every run) is
rewritten after each run, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the `convzoo` command does

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from convzoo.config import TrainConfig, recipe
from convzoo.data import Batches, load_split
from convzoo.evaluate import evaluate
from convzoo.fileio import write_json
from convzoo.monitor import not_learning
from convzoo.network import build_model
from convzoo.optim import make_optimizer
from convzoo.runtime import compute_settings, resolve_device, uses_cuda_graphs
from convzoo.step import TrainStep, autocast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

PROBE_STEPS = (1, 5, 20, 100)  # steps after which the probe runs (and at 0 and every epoch's end)
PROBE_SIZE = 256
DEFAULT_VARIANTS = ("book", "lr_scale=0.5", "bias=zero", "init=kaiming", "last_relu=off")
SWEEP_KEYS = ("lr_scale", "bias", "last_relu")  # variant keys that are not TrainConfig fields


def parse_variant(spec: str) -> dict[str, str]:
    """``"lr=0.05,init=kaiming"`` -> ``{"lr": "0.05", "init": "kaiming"}``; ``book`` is no change."""
    if spec == "book":
        return {}
    pairs = [item.split("=", 1) for item in spec.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"error: variant {spec!r} is not book or key=value[,key=value...]")
    return dict(pairs)  # type: ignore[arg-type]


def variant_config(base: TrainConfig, variant: dict[str, str]) -> TrainConfig:
    """``base`` with the variant's ``TrainConfig`` fields (converted to each field's type) and ``lr_scale``."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    changes: dict[str, object] = {}
    for key, value in variant.items():
        if key in SWEEP_KEYS:
            continue
        if key not in types:
            raise SystemExit(f"error: unknown variant key {key!r} (a TrainConfig field or one of {SWEEP_KEYS})")
        kind = str(types[key])
        changes[key] = (float(value) if "float" in kind else int(value) if "int" in kind
                        else value in ("1", "true", "on") if "bool" in kind else value)
    if "lr_scale" in variant:
        changes["lr"] = float(changes.get("lr", base.lr)) * float(variant["lr_scale"])
    config = dataclasses.replace(base, **changes)
    config.validate()
    return config


def build(config: TrainConfig, variant: dict[str, str], device: torch.device) -> nn.Module:
    """The model as ``fit`` builds it (seeded, then initialised), changed by the variant."""
    model = build_model(config, device)
    if variant.get("bias") == "zero":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                nn.init.zeros_(module.bias)
    if variant.get("last_relu") == "off":
        relus = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
                 if isinstance(child, nn.ReLU)]
        if config.model != "nin" or not relus:
            raise SystemExit(f"error: last_relu=off is defined for nin only, not {config.model}")
        parent, name = relus[-1]
        setattr(parent, name, nn.Identity())
    return model


class Probe:
    """Forward hooks on every ``Conv2d``: which output channels are dead on the probe batch."""

    def __init__(self, model: nn.Module, x: torch.Tensor, last_relu: bool = True) -> None:
        self.model, self.x = model, x
        self.convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        # LeNet's sigmoids have no dead units; every convolution of the other networks feeds a ReLU
        # (but NiN's last one under last_relu=off, which is then left out).
        self.relu = not any(isinstance(m, nn.Sigmoid) for m in model.modules())
        self.last_relu = last_relu

    @torch.no_grad()
    def __call__(self, amp: bool = False) -> dict:
        alive: dict[nn.Module, torch.Tensor] = {}

        def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            alive[module] = (output > 0).flatten(2).any(dim=2).any(dim=0)  # (C,): positive somewhere

        handles = [conv.register_forward_hook(hook) for conv in self.convs]
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast(self.x.device, amp):
                logits = self.model(self.x).float()
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        row = {"logit_spread": float(logits.std(dim=1).mean()), "logit_signal": float(logits.std(dim=0).mean()),
               "logit_mean": float(logits.mean())}
        if self.relu:
            convs = self.convs if self.last_relu else self.convs[:-1]
            dead = [(~alive[c]).sum().item() for c in convs]
            row["dead"] = sum(dead) / sum(len(alive[c]) for c in convs)
            if self.last_relu:
                row["dead_last"] = dead[-1] / len(alive[convs[-1]])
        return row


def update_ratios(model: nn.Module, lr: float) -> dict:
    """lr x |grad| / |weight| of the first and last weight tensors (after a step; the gradients are still there)."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1]
    out = {}
    for key, p in (("first", weights[0]), ("last", weights[-1])):
        out[key] = None if p.grad is None else float(lr * p.grad.norm() / p.detach().norm().clamp_min(1e-12))
    return out


def run_one(config: TrainConfig, variant: dict[str, str], data: tuple, log, train_it: bool = True) -> dict:  # noqa: ANN001
    """Train one seed of one variant (or, without ``train_it``, only probe it at initialisation); its history,
    probes and outcome."""
    (train_x, train_y), (test_x, test_y) = data
    device = resolve_device(config.device)
    started = time.perf_counter()
    with compute_settings(config):
        model = build(config, variant, device)
        train = Batches(train_x, train_y, config.batch_size, shuffle=True, seed=config.seed, device=device,
                        resize=config.input_size, augment=config.augment, channels_last=config.channels_last)
        test = Batches(test_x, test_y, config.eval_batch_size, device=device, resize=config.input_size,
                       channels_last=config.channels_last)
        probe_x = next(iter(Batches(train_x[:PROBE_SIZE], train_y[:PROBE_SIZE], PROBE_SIZE, device=device,
                                    resize=config.input_size, channels_last=config.channels_last)))[0]
        probe = Probe(model, probe_x, last_relu=variant.get("last_relu") != "off")
        graphs = uses_cuda_graphs(config, device)
        optimizer = make_optimizer(model, config, device=device, graphable=graphs)
        net = torch.compile(model) if config.compile else model
        step = TrainStep(net, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), optimizer, device,
                         amp=config.amp, cuda_graph=graphs, batch_size=config.batch_size)
        probes = [{"step": 0, **probe(config.amp)}]
        history: list[dict] = []
        ratios = None
        outcome, steps = (None if train_it else "not trained"), 0
        for epoch in range(config.epochs if train_it else 0):
            train.set_epoch(epoch)
            model.train()
            step.reset()
            seen = 0
            for x, y in train:
                step.set_lr(config.lr)  # the d2l recipe's constant rate (other schedules are not swept)
                step(x, y)
                seen += len(y)
                steps += 1
                if steps == 1:
                    ratios = update_ratios(model, config.lr)
                if steps in PROBE_STEPS:
                    probes.append({"step": steps, "loss": float(step.loss_sum) / seen, **probe(config.amp)})
            train_loss = float(step.loss_sum) / seen
            test_acc = evaluate(model, test, config.amp).accuracy
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "test_acc": test_acc})
            probes.append({"step": steps, "epoch": epoch + 1, **probe(config.amp)})
            log(f"    epoch {epoch + 1}: loss {train_loss:.4f}  test acc {test_acc:.4f}  dead "
                f"{probes[-1].get('dead', float('nan')):.2f} (last {probes[-1].get('dead_last', float('nan')):.2f})  "
                f"logit signal {probes[-1]['logit_signal']:.3g}")
            if not math.isfinite(train_loss):
                outcome = "diverged"
                break
    if outcome is None:
        if not_learning(history, config):
            outcome = "stuck"
        elif not_learning(history[-1:], config):
            outcome = "collapsed"
        else:
            outcome = "learned"
    return {"seed": config.seed, "lr": config.lr, "init": config.init, "outcome": outcome,
            "final_test_acc": history[-1]["test_acc"] if history else None, "history": history, "probes": probes,
            "update_ratio_step1": ratios, "seconds": time.perf_counter() - started}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _probed(runs: list[dict], step: int, key: str) -> float | None:
    """The mean over ``runs`` of ``key`` in the probe after ``step`` steps (0: at initialisation)."""
    return _mean([next((p.get(key) for p in r["probes"] if p["step"] == step and "epoch" not in p), None)
                  for r in runs])


def summarize(runs: list[dict]) -> dict:
    """Per (model, variant): how many seeds ended where, mean accuracy, mean probes at init and after step 20."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["variant"]), []).append(run)
    out = {}
    for (model, variant), group in groups.items():
        out[f"{model} {variant}"] = {
            "model": model, "variant": variant, "seeds": len(group), "lr": group[0]["lr"], "init": group[0]["init"],
            "outcomes": {o: sum(r["outcome"] == o for r in group)
                         for o in ("learned", "stuck", "collapsed", "diverged", "not trained")},
            "final_test_acc": [round(r["final_test_acc"], 4) for r in group if r["final_test_acc"] is not None],
            "mean_final_test_acc": _mean([r["final_test_acc"] for r in group]),
            "init_logit_signal": _probed(group, 0, "logit_signal"),
            "init_logit_spread": _probed(group, 0, "logit_spread"),
            "init_dead": _probed(group, 0, "dead"), "init_dead_last": _probed(group, 0, "dead_last"),
            "step100_dead": _probed(group, 100, "dead"), "step100_dead_last": _probed(group, 100, "dead_last"),
            "step100_logit_signal": _probed(group, 100, "logit_signal"), "step100_loss": _probed(group, 100, "loss"),
            "update_ratio_first": _mean([(r["update_ratio_step1"] or {}).get("first") for r in group]),
            "update_ratio_last": _mean([(r["update_ratio_step1"] or {}).get("last") for r in group]),
        }
    return out


def table(summary: dict) -> list[str]:
    def f(value: float | None, fmt: str = ".2f") -> str:
        return "-" if value is None else format(value, fmt)

    rows = ["| model | variant | lr | init | at chance / seeds | final test acc per seed | logit signal: init -> "
            "step 100 | loss at step 100 | dead at init (last) | dead at step 100 (last) | step 1: update ratio "
            "first, last |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary.values():
        trained = s["seeds"] - s["outcomes"]["not trained"]
        chance = s["outcomes"]["stuck"] + s["outcomes"]["collapsed"] + s["outcomes"]["diverged"]
        rows.append(f"| {s['model']} | {s['variant']} | {s['lr']:g} | {s['init']} | {chance} / {trained} | "
                    f"{', '.join(f'{a:.3f}' for a in s['final_test_acc'])} | {f(s['init_logit_signal'], '.1e')} -> "
                    f"{f(s['step100_logit_signal'], '.1e')} | {f(s['step100_loss'], '.3f')} | {f(s['init_dead'])} "
                    f"({f(s['init_dead_last'])}) | {f(s['step100_dead'])} ({f(s['step100_dead_last'])}) | "
                    f"{f(s['update_ratio_first'], '.1e')}, "
                    f"{f(s['update_ratio_last'], '.1e')} |")
    return rows


def parse_sizes(items: list[str] | None) -> dict[str, int]:
    """``["67"]`` -> every model at 67; ``["nin=67", "googlenet=32"]`` -> per model."""
    sizes: dict[str, int] = {}
    for item in items or []:
        model, _, size = item.rpartition("=")
        sizes[model or "*"] = int(size)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["nin", "googlenet"])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        help=f"book or key=value[,key=value] (default: {' '.join(DEFAULT_VARIANTS)}); "
                             "variants that do not apply to a model (last_relu=off but for nin) are skipped")
    parser.add_argument("--recipe", default="d2l")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--resize", nargs="*", default=None, help="SIZE for every model, or MODEL=SIZE ...")
    parser.add_argument("--out", type=Path, required=True, help="JSON file, rewritten after every run")
    parser.add_argument("--append", action="store_true", help="keep the runs already in --out (another sweep's)")
    parser.add_argument("--budget", type=float, default=None, help="seconds; no run starts after they are spent")
    parser.add_argument("--init-only", action="store_true",
                        help="only probe each seed's initialisation (cheap at the full input size: no training)")
    for flag, kind in (("epochs", int), ("batch-size", int), ("device", str), ("limit-train", int),
                       ("limit-test", int), ("threads", int)):
        parser.add_argument(f"--{flag}", type=kind, default=None)
    for flag in ("amp", "channels-last", "cuda-graphs", "compile", "autotune"):
        parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.resize)
    start = time.perf_counter()
    args_json = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    meta = {**machine_info(), "args": args_json}
    runs: list[dict] = []
    if args.append and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        runs = earlier["runs"]
        meta["earlier"] = earlier.get("earlier", []) + [{k: earlier[k] for k in ("command", "date", "args", "seconds")
                                                         if k in earlier}]

    def log(line: str) -> None:
        print(line, flush=True)

    data: dict[tuple[int | None, int | None], tuple] = {}
    for model in args.models:
        for spec in args.variants:
            variant = parse_variant(spec)
            if variant.get("last_relu") == "off" and model != "nin":
                continue
            for seed in range(args.seeds):
                if args.budget is not None and time.perf_counter() - start > args.budget:
                    log(f"budget of {args.budget:.0f} s spent: {model} {spec} seed {seed} and later runs skipped")
                    break
                base = recipe(model, args.recipe, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                              limit_train=args.limit_train, limit_test=args.limit_test, threads=args.threads,
                              amp=args.amp, channels_last=args.channels_last, cuda_graphs=args.cuda_graphs,
                              compile=args.compile, autotune=args.autotune,
                              resize=sizes.get(model, sizes.get("*")), seed=seed)
                config = variant_config(base, variant)
                key = (config.limit_train, config.limit_test)
                if key not in data:
                    train_x, train_y = load_split("train", config.data_dir)
                    test_x, test_y = load_split("test", config.data_dir)
                    data[key] = ((train_x[: config.limit_train], train_y[: config.limit_train]),
                                 (test_x[: config.limit_test], test_y[: config.limit_test]))
                log(f"== {model} {spec} seed {seed}: lr {config.lr:g}, init {config.init}, input {config.input_size}, "
                    f"batch {config.batch_size}, {config.epochs} epochs on {len(data[key][0][0])} images")
                run = run_one(config, variant, data[key], log, train_it=not args.init_only)
                runs.append({"model": model, "variant": spec, **run})
                init = run["probes"][0]
                acc = run["final_test_acc"] or float("nan")
                log(f"   {run['outcome']}: test acc {acc:.4f}, {run['seconds']:.1f} s; at init: logit signal "
                    f"{init['logit_signal']:.3g}, spread {init['logit_spread']:.3g}, "
                    f"dead {init.get('dead', float('nan')):.2f} (last {init.get('dead_last', float('nan')):.2f})")
                summary = summarize(runs)
                write_json(args.out, {**meta, "seconds": time.perf_counter() - start, "summary": summary,
                                      "runs": runs})
    for row in table(summarize(runs)):
        log(row)
    log(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
