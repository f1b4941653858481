"""Training, evaluation and prediction: recipes, the run directory, resume, the CLI around them."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401  (the first fit imports it, ~10 s: paid once, at collection)
from PIL import Image

from convzoo.checkpoint import load_model
from convzoo.config import recipe
from convzoo.data import load_split
from convzoo.data.source import DEBIAN_DIR
from convzoo.report import write_report as REAL_WRITE_REPORT
from convzoo.run import Run
from convzoo.train import fit

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


pytestmark = pytest.mark.usefixtures("reports")  # the reports recorded, not drawn (conftest.py)


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run of the modern LeNet on 512 images of the committed slice of the real data (AdamW, so it learns in
    2 epochs: test accuracy about 0.58), scored on 200 test images."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    config = recipe("lenet_modern", optimizer="adamw", lr=0.005, batch_size=32, epochs=2, limit_train=512,
                    limit_test=200, data_dir=str(SLICE), device="cpu")
    fit(config, out, log=lambda _: None, progress=False)
    return out


# --- the run directory ------------------------------------------------------------------------

def test_run_directory_has_everything(lenet_run: Path, reports: list) -> None:
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors", "result.json"):
        assert (lenet_run / name).is_file(), name
    assert not list(lenet_run.glob(".*tmp*")), "temporary files left behind"
    meta = json.loads((lenet_run / "config.json").read_text())
    assert meta["config"]["model"] == "lenet_modern" and meta["model"]["name"] == "lenet_modern"
    assert meta["versions"]["torch"] == torch.__version__ and meta["device"] == "cpu" and meta["command"]
    rows = [json.loads(line) for line in (lenet_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert set(r) >= {"epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_sec"}
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    result = json.loads((lenet_run / "result.json").read_text())
    assert result["test_acc"] == rows[-1]["test_acc"] > 0.4
    asked = [(run.run_dir, pictures) for run, pictures in reports]
    assert (lenet_run, True) in asked  # its report, with the pictures (drawn in test_a_run_writes_its_report)


@pytest.mark.slow
def test_a_run_writes_its_report(tmp_path: Path) -> None:
    from convzoo import report

    config = recipe("lenet", epochs=1, batch_size=32, limit_train=64, limit_test=32, data_dir=str(SLICE),
                    device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "write_report", REAL_WRITE_REPORT)
        fit(config, tmp_path / "run", log=lambda _: None, progress=False)
    for name in ("curves.png", "confusion.png", "report.html"):
        assert (tmp_path / "run" / name).is_file(), name
    assert Image.open(tmp_path / "run" / "curves.png").size[0] > 200


def test_model_file_rebuilds_its_model(lenet_run: Path) -> None:
    model = load_model(lenet_run / "model.safetensors")
    assert model.config["name"] == "lenet_modern" and not model.training
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_eval_reproduces_the_training_accuracy(lenet_run: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = run_cli("eval", str(lenet_run), "--json", "--data-dir", str(SLICE))
    assert code == 0
    report = json.loads(out.strip().splitlines()[-1])
    result = json.loads((lenet_run / "result.json").read_text())
    assert report["test_acc"] == pytest.approx(result["test_acc"], abs=1e-9)
    assert report["num_examples"] == 200 and len(report["per_class_accuracy"]) == 10


def test_predict_a_test_image_and_a_colour_jpeg(lenet_run: Path, tmp_path: Path,
                                                run_cli: Callable[..., tuple[int, str, str]]) -> None:
    images, labels = load_split("test", SLICE)
    model = load_model(lenet_run / "model.safetensors")
    with torch.no_grad():
        probs = model(images[:200, None].float() / 255).softmax(1)
    confidence = probs.gather(1, labels[:200, None]).squeeze(1)
    index = int(confidence.argmax())  # the image the model is surest of
    png = tmp_path / "test.png"
    Image.fromarray(images[index].numpy()).save(png)
    # A colour photo of another size: the same garment, dark on a light background, 3x larger, tinted.
    gray = 255 - np.asarray(Image.fromarray(images[index].numpy()).resize((84, 84), Image.BILINEAR))
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(np.stack([gray, gray, (gray * 0.95).astype(np.uint8)], axis=-1)).save(jpeg, quality=95)

    code, out, _ = run_cli("predict", str(lenet_run), str(png), str(jpeg), "--json")
    assert code == 0
    rows = json.loads(out.strip().splitlines()[-1])
    assert [r["label"] for r in rows] == [int(labels[index])] * 2
    assert all(0 < r["probability"] <= 1 for r in rows)


def test_resume_continues_to_the_same_weights(tmp_path: Path) -> None:
    base = {"optimizer": "adamw", "lr": 0.01, "data_dir": str(SLICE), "device": "cpu", "limit_train": 512,
            "limit_test": 200}
    fit(recipe("lenet", epochs=2, **base), tmp_path / "straight", log=lambda _: None, progress=False)
    fit(recipe("lenet", epochs=1, **base), tmp_path / "resumed", log=lambda _: None, progress=False)
    fit(recipe("lenet", epochs=2, **base), tmp_path / "resumed", resume=True, log=lambda _: None, progress=False)
    a = load_model(tmp_path / "straight" / "model.safetensors").state_dict()
    b = load_model(tmp_path / "resumed" / "model.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    rows = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["config"]["epochs"] == 2  # the new epochs
    # metrics.jsonl lost after the checkpoint (a kill -9 between the two): a resume with nothing left to train
    # writes it again from the checkpoint's history
    (tmp_path / "resumed" / "metrics.jsonl").unlink()
    fit(recipe("lenet", epochs=2, **base), tmp_path / "resumed", resume=True, log=lambda _: None, progress=False)
    assert (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines() == rows


@pytest.mark.parametrize("model, size", [
    ("lenet", 28), ("lenet_bn", 28), ("lenet_modern", 28), *[pytest.param(*case, marks=pytest.mark.slow) for case in [
        ("alexnet", 67), ("vgg11_small", 32), ("vgg11", 32), ("nin", 67), ("googlenet", 32), ("resnet18", 32)]],
])
def test_every_model_trains_and_its_loss_falls(model: str, size: int, tmp_path: Path) -> None:
    config = recipe(model, optimizer="adamw", lr=3e-4, epochs=1, batch_size=32, resize=size, limit_train=512,
                    limit_test=64, data_dir=str(SLICE), device="cpu", init="default")
    result = fit(config, tmp_path / model, log=lambda _: None, progress=False)
    first = load_model(tmp_path / model / "model.safetensors")
    assert result.epochs == 1 and math.isfinite(result.history[0]["train_loss"])
    # Loss on the training slice falls from the untrained network's.
    images, labels = load_split("train", SLICE)
    x = torch.nn.functional.interpolate(images[:256, None].float() / 255, size=(size, size), mode="bilinear")
    torch.manual_seed(config.seed)
    from convzoo.models import create_model
    untrained = create_model(model, input_size=size).eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(untrained(x), labels[:256])
        after = torch.nn.functional.cross_entropy(first(x), labels[:256])
    assert after < before


# --- the speed switches: the GPU code paths, run on the CPU ---------------------------------------

@pytest.mark.parametrize("amp, channels_last, compiled", [
    (True, True, False), (False, False, False), pytest.param(True, True, True, marks=pytest.mark.slow),
], ids=["bf16-autocast+channels-last", "float32+contiguous", "bf16-autocast+compile"])
def test_speed_switches_train_and_save_a_model_that_evaluates_the_same(
        amp: bool, channels_last: bool, compiled: bool, tmp_path: Path) -> None:
    config = recipe("lenet_bn", "fast", epochs=1, batch_size=64, limit_train=256, limit_test=128,
                    data_dir=str(SLICE), device="cpu", amp=amp, channels_last=channels_last, compile=compiled)
    result = fit(config, tmp_path / "run", log=lambda _: None, progress=False)
    assert math.isfinite(result.history[0]["train_loss"])
    # The saved (uncompiled) model under the run's precision agrees with the training-time evaluation;
    # a compiled graph may round bf16 differently, so allow a prediction or two to flip.
    evaluation = Run.open(tmp_path / "run", "cpu").evaluate(progress=False)
    assert evaluation.accuracy == pytest.approx(result.test_acc, abs=0.02 if compiled else 0)


def test_a_failed_background_checkpoint_write_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import convzoo.rundir.epochs as epochs

    def no_space(_path: object, _snapshot: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(epochs, "write_state", no_space)
    config = recipe("lenet", epochs=2, batch_size=32, limit_train=64, limit_test=32, data_dir=str(SLICE),
                    device="cpu")
    with pytest.raises(OSError, match="No space left"):
        fit(config, tmp_path / "run", log=lambda _: None, progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="the full data set is not installed (make test installs it)")
def test_one_epoch_on_the_full_real_data(tmp_path: Path) -> None:
    config = recipe("lenet_bn", "fast", epochs=1, device="cpu")
    result = fit(config, tmp_path / "full", log=lambda _: None, progress=False)
    assert result.history[0]["examples_per_sec"] > 0
    assert len(load_split("train")[0]) == 60000
    assert result.test_acc > 0.6


# --- the command line -------------------------------------------------------------------------

def test_train_json_line(tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = run_cli("train", "lenet", "--epochs", "1", "--limit-train", "256", "--limit-test", "100",
                           "--data-dir", str(SLICE), "--device", "cpu", "--out", str(tmp_path / "r"), "--json")
    assert code == 0
    line = json.loads(out.strip().splitlines()[-1])
    assert set(line) == {"run_dir", "test_acc", "train_seconds", "epochs", "learned", "warnings"}
    assert line["epochs"] == 1 and line["learned"] == (line["test_acc"] > 0.12)


@pytest.mark.parametrize("args, message", [
    (["train", "lenett"], "did you mean lenet"),
    (["train", "lenet", "--epochs", "0"], "--epochs"),
    (["train", "lenet", "--batch-size", "-4"], "--batch-size"),
    (["train", "lenet", "--lr", "nan"], "--lr"),
    (["train", "alexnet", "--resize", "28"], "too small for alexnet"),
    (["summary", "alexnet", "--input-size", "28"], "vanishes"),
])
def test_user_errors_are_one_line(args: list[str], message: str, tmp_path: Path,
                                  run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = run_cli(*args, "--out", str(tmp_path / "x")) if args[0] == "train" \
        else run_cli(*args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_existing_run_directory_is_refused(lenet_run: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = run_cli("train", "lenet", "--out", str(lenet_run))
    assert code == 2 and "--resume" in err


def test_missing_cuda_is_a_clear_error(tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli("train", "lenet", "--device", "cuda", "--out", str(tmp_path / "c"))
    assert code == 2 and "CUDA is not available" in err


def test_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "convzoo", "eval", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr




# --- what a step of the loop does, pinned ---------------------------------------------------------

@pytest.fixture  # per test (about a second): mutmut runs a mutant only against the tests that reach its function
def spied_run(tmp_path_factory: pytest.TempPathFactory, reports: list) -> dict:
    """Two epochs of LeNet over 300 images in batches of 64 (4 full batches and one of 44), one-cycle schedule,
    150 test images in evaluation batches of 64; what the loop asked of the step, the batches, the evaluation, the
    divergence watch and the progress view; what it logged and warned; the report it asked for."""
    from convzoo import train
    from convzoo.data import Batches
    from convzoo.monitor import LossWatch
    from convzoo.progress import Progress
    from convzoo.step import TrainStep

    seen: dict = {"lr": [], "epochs": [], "evaluations": [], "batch_sizes": [], "sums": [], "training": [],
                  "checks": [], "log": [], "warnings": [], "view": []}
    set_lr, set_epoch, step_call, evaluate = TrainStep.set_lr, Batches.set_epoch, TrainStep.__call__, train.evaluate
    check = LossWatch.check

    def record_lr(self, lr: float) -> None:
        seen["lr"].append(lr)
        set_lr(self, lr)

    def record_epoch(self, epoch: int) -> None:
        if self.shuffle:  # the training batches (the test batches are never shuffled)
            seen["epochs"].append(epoch)
        set_epoch(self, epoch)

    def record_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        seen["batch_sizes"].append(len(y))
        seen["training"].append(self.model.training)
        step_call(self, x, y)
        seen["sums"].append((self.loss_sum.item(), int(self.correct)))  # the epoch's running sums after this step

    def record_evaluation(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        seen["evaluations"].append(result)
        return result

    def record_check(self, loss_sum: torch.Tensor, count: int, where: tuple, lr: float) -> None:
        seen["checks"].append((loss_sum.item(), count, where, lr))
        check(self, loss_sum, count, where, lr)

    class View(Progress):
        def start(self, config, start_epoch: int, steps: int, test_images: int) -> None:
            seen["view"].append(("start", config, start_epoch, steps, test_images))

        def step(self, done: int, count: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
            seen["view"].append(("step", done, count, loss_sum.item(), int(correct)))

        def evaluating(self, done: int, total: int) -> None:
            seen["view"].append(("evaluating", done, total))

        def epoch_done(self, row: dict) -> None:
            seen["view"].append(("epoch_done", row))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainStep, "set_lr", record_lr)
        mp.setattr(Batches, "set_epoch", record_epoch)
        mp.setattr(TrainStep, "__call__", record_step)
        mp.setattr(train, "evaluate", record_evaluation)
        mp.setattr(LossWatch, "check", record_check)
        config = recipe("lenet", schedule="onecycle", lr=0.2, epochs=2, batch_size=64, limit_train=300,
                        limit_test=150, eval_batch_size=64, data_dir=str(SLICE), device="cpu", threads=1)
        out = tmp_path_factory.mktemp("spied") / "run"
        seen["result"] = fit(config, out, log=seen["log"].append, warn=seen["warnings"].append, progress=View())
    seen["out"], seen["config"], seen["report"] = out, config, reports[-1]
    return seen


def test_the_learning_rate_of_every_step_follows_the_schedule(spied_run: dict) -> None:
    """Step k of n (counted over the whole run, from 0) trains at lr x factor(k / n): the one-cycle factor is
    0.1 + 0.9 p / 0.25 while p = k / n < 0.25, then 0.5 (1 + cos(pi (p - 0.25) / 0.75)), written out here."""
    n = 10  # 5 batches x 2 epochs
    factors = [0.1 + 0.9 * (k / n) / 0.25 if k / n < 0.25 else 0.5 * (1 + math.cos(math.pi * (k / n - 0.25) / 0.75))
               for k in range(n)]
    assert spied_run["lr"] == pytest.approx([0.2 * f for f in factors], rel=1e-12)
    assert spied_run["batch_sizes"] == [64, 64, 64, 64, 44] * 2
    # Each epoch's row records the rate of its last step.
    assert [row["lr"] for row in spied_run["result"].history] == pytest.approx([0.2 * factors[4], 0.2 * factors[9]])


def test_each_epoch_draws_its_own_batch_order(spied_run: dict) -> None:
    assert spied_run["epochs"] == [0, 1]


def test_every_test_image_is_evaluated_once_per_epoch(spied_run: dict) -> None:
    """150 images in batches of 64 (the last of 22): each epoch scores exactly the first 150 test images, and the
    final accuracy is the saved model's on them, computed here from its logits."""
    from convzoo.data.batches import to_input

    assert [e.count for e in spied_run["evaluations"]] == [150, 150]
    images, labels = load_split("test", SLICE)
    model = load_model(spied_run["out"] / "model.safetensors").eval()
    with torch.no_grad():
        predictions = model(to_input(images[:150])).argmax(dim=1)
    final = spied_run["evaluations"][-1]
    assert torch.equal(final.predictions, predictions)
    assert final.accuracy == spied_run["result"].test_acc == pytest.approx((predictions == labels[:150]).float().mean())
    result = json.loads((spied_run["out"] / "result.json").read_text())
    assert result["test_acc"] == pytest.approx(final.accuracy) and result["epochs"] == 2


# --- --resume of a run whose checkpoint is gone (issue 23) ----------------------------------------------------------

def test_resume_of_a_finished_run_whose_checkpoint_was_deleted_is_refused(
    lenet_run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """It retrained from scratch without a word: now one line, nothing trained, every file as it was."""
    run = tmp_path / "run"
    shutil.copytree(lenet_run, run)
    (run / "checkpoint.safetensors").unlink()
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    code, out, err = run_cli("train", "--resume", str(run), "--epochs", "3")
    assert code == 2 and "epoch" not in out
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"{run} has no checkpoint.safetensors to continue from, though it completed epochs" in err
    assert "--overwrite" in err
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_resume_of_a_run_that_completed_no_epoch_starts_from_the_first(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    from convzoo.models import create_model
    from convzoo.rundir import MARKER, write_config
    from convzoo.runtime import resolve_device

    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text('{"format": "convzoo-run-1"}')
    config = recipe("lenet", optimizer="adamw", lr=0.005, batch_size=32, epochs=1, limit_train=64, limit_test=32,
                    data_dir=str(SLICE), device="cpu")
    write_config(run, config, create_model("lenet"), resolve_device("cpu"), "convzoo train lenet")
    code, out, err = run_cli("train", "--resume", str(run))
    assert code == 0, err
    assert f"resuming {run}: no epoch was completed, so it starts from the first" in out + err
    assert [json.loads(row)["epoch"] for row in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (run / "model.safetensors").is_file()


def test_each_step_trains_and_is_watched_and_shown_with_the_epochs_running_sums(spied_run: dict) -> None:
    """After step i (from 0) of each epoch, the divergence watch (every step on the CPU) and the view get the epoch's
    running loss and correct counts over the images seen so far; each epoch starts them again from zero."""
    sizes = [64, 64, 64, 64, 44]
    seen = [sum(sizes[: i + 1]) for i in range(5)]  # 64, 128, 192, 256, 300
    sums, lrs = spied_run["sums"], spied_run["lr"]
    assert spied_run["training"] == [True] * 10  # training mode, though each epoch's evaluation ends in eval mode
    assert spied_run["checks"] == [(sums[5 * e + i][0], seen[i], (e, i, 5), lrs[5 * e + i])
                                   for e in range(2) for i in range(5)]
    steps = [v for v in spied_run["view"] if v[0] == "step"]
    assert steps == [("step", i + 1, seen[i], *sums[5 * e + i]) for e in range(2) for i in range(5)]
    assert sums[5][1] <= 64 and sums[5][0] < sums[4][0] / 2  # epoch 2's sums restart from zero
    history = spied_run["result"].history
    for e, row in enumerate(history):
        loss_sum, correct = sums[5 * e + 4]
        assert row["epoch"] == e + 1
        assert row["train_loss"] == round(loss_sum / 300, 6) and row["train_acc"] == round(correct / 300, 6)
        assert row["test_acc"] == round(spied_run["evaluations"][e].accuracy, 6)
        assert 0 < row["seconds"] < 60 and 0 <= row["eval_seconds"] < 60
        assert row["examples_per_sec"] == pytest.approx(300 / row["seconds"], rel=0.02)
        assert set(row) == {"epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_sec",
                            "eval_seconds"}


def test_the_view_is_told_the_run_its_evaluations_and_epochs(spied_run: dict) -> None:
    view = spied_run["view"]
    assert view[0] == ("start", spied_run["config"], 0, 5, 150)
    evaluating = [v[1:] for v in view if v[0] == "evaluating"]
    assert evaluating == [(1, 3), (2, 3), (3, 3)] * 2  # 150 test images in evaluation batches of 64, each epoch
    assert [v[1] for v in view if v[0] == "epoch_done"] == spied_run["result"].history


def test_the_log_has_one_line_per_epoch(spied_run: dict) -> None:
    history = spied_run["result"].history
    assert spied_run["log"][0] == "threads: 1 (--threads)"
    assert spied_run["log"][1:] == [
        f"epoch {r['epoch']:>3}/2  loss {r['train_loss']:.4f}  train acc {r['train_acc']:.4f}  test acc "
        f"{r['test_acc']:.4f}  {r['seconds']:.1f} s  {r['examples_per_sec']:,.0f} ex/s" for r in history]
    assert spied_run["log"][1].startswith("epoch   1/2  loss ")


def test_the_report_is_asked_for_with_its_pictures_and_the_images_scored(spied_run: dict) -> None:
    evaluated, pictures = spied_run["report"]
    images, labels = load_split("test", SLICE)
    assert pictures is True and evaluated.run.run_dir == spied_run["out"]
    assert evaluated.evaluation is spied_run["evaluations"][-1]
    assert evaluated.images.shape == (150, 28, 28) and torch.equal(evaluated.images, images[:150])
    assert torch.equal(evaluated.labels, labels[:150])
    result = json.loads((spied_run["out"] / "result.json").read_text())
    assert result["test_images"] == 150 and result["ran_with"] == "threads: 1 (--threads)"
    per_class = dict(zip(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                          "Ankle boot"], (round(a, 4) for a in evaluated.evaluation.per_class_accuracy)))
    assert result["per_class_accuracy"] == per_class


# --- the set-up's parts, called directly ----------------------------------------------------------------------------

def _data(train: int = 40, test: int = 20, classes: tuple[str, ...] = tuple("abcdefghij"), channels: int = 1):
    """A made-up data set: ``train`` and ``test`` distinct 4x4 images, labels cycling through the classes."""
    from convzoo.data.sets import DataSet

    def images(n: int, start: int) -> torch.Tensor:
        return (torch.arange(start, start + n)[:, None, None, None] % 256).to(torch.uint8).expand(
            n, channels, 4, 4).contiguous()

    return DataSet("made-up", classes, images(train, 0), torch.arange(train) % len(classes), images(test, 100),
                   torch.arange(test) % len(classes))


def test_resuming_on_other_data_is_refused_naming_both(tmp_path: Path) -> None:
    from convzoo.errors import DataError
    from convzoo.models import create_model
    from convzoo.rundir import write_config
    from convzoo.train import _check_same_data

    config = recipe("lenet", device="cpu")
    write_config(tmp_path, config, create_model("lenet"), torch.device("cpu"), "convzoo train lenet",
                 _data().describe())
    _check_same_data(tmp_path, _data())  # the same classes and channels: nothing to say
    start = f"{tmp_path} was trained on 10 classes of 1-channel images (a, b, c, d, e...); its data now has "
    end = ": the run continues only on the data it started with"
    for data, now in [(_data(classes=("x", "y", "z")), "3 classes of 1-channel images (x, y, z...)"),
                      (_data(channels=3), "10 classes of 3-channel images (a, b, c, d, e...)")]:
        with pytest.raises(DataError) as caught:
            _check_same_data(tmp_path, data)
        assert str(caught.value) == start + now + end and caught.value.field == "data"


def test_a_rank_joins_the_process_group_and_checks_the_ranks_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import asdict

    from convzoo import distributed, train
    from convzoo.distributed import Rank
    from convzoo.errors import ConfigError

    calls: list = []
    joined = torch.device("meta")  # what the group gave this rank
    monkeypatch.setattr(distributed, "init", lambda rank, device: calls.append(("init", rank, device)) or joined)
    monkeypatch.setattr(distributed, "agree", lambda config, *, local=(): calls.append(("agree", config, local)))
    config = recipe("lenet", device="cpu", seed=3)
    assert train._device(config, None) == torch.device("cpu") and calls == []
    assert train._device(config, Rank(1, 2, 1)) is joined
    assert calls == [("init", Rank(1, 2, 1), torch.device("cpu")), ("agree", asdict(config), ("threads", "data_dir"))]
    # CUDA graphs need one process; on the CPU the switch does nothing, so it is no reason to stop
    graphed = recipe("lenet", device="cpu", cuda_graphs=True)
    assert train._device(graphed, Rank(0, 2, 0)) is joined
    monkeypatch.setattr(train, "resolve_device", lambda _: torch.device("cuda"))
    with pytest.raises(ConfigError) as caught:
        train._device(graphed, Rank(0, 2, 0))
    assert str(caught.value) == "--cuda-graphs trains in one process; leave it out under torchrun"
    assert caught.value.field == "cuda_graphs"
    calls.clear()
    assert train._device(config, Rank(0, 2, 0)) is joined and calls[0] == ("init", Rank(0, 2, 0), torch.device("cuda"))


@pytest.fixture
def checkpointed(tmp_path: Path) -> tuple[Path, dict, list[dict]]:
    """A run directory whose checkpoint holds 2 completed epochs of a LeNet (seed 7) and its AdamW state."""
    from convzoo.checkpoint import snapshot_state, write_state
    from convzoo.models import create_model
    from convzoo.optim import make_optimizer

    torch.manual_seed(7)
    model = create_model("lenet")
    optimizer = make_optimizer(model, recipe("lenet", optimizer="adamw"))
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    history = [{"epoch": e, "train_loss": 2.0, "train_acc": 0.2, "test_acc": 0.3, "lr": 0.1, "seconds": 1.0,
                "examples_per_sec": 10.0, "eval_seconds": 0.1} for e in (1, 2)]
    write_state(tmp_path / "checkpoint.safetensors", snapshot_state(model, optimizer, epoch=2, history=history))
    return tmp_path, {k: v.clone() for k, v in model.state_dict().items()}, history


def test_a_resumed_run_gets_its_weights_optimizer_state_and_epochs(checkpointed: tuple) -> None:
    from types import SimpleNamespace

    from convzoo.errors import ConfigError
    from convzoo.models import create_model
    from convzoo.optim import make_optimizer
    from convzoo.train import _resumed_state

    path, weights, history = checkpointed
    config, log = recipe("lenet", optimizer="adamw", epochs=2), []
    model = create_model("lenet")
    optimizer = make_optimizer(model, config)
    assert _resumed_state(config, SimpleNamespace(path=path), model, optimizer, log.append) == (2, history)
    assert log == [f"resuming {path} after epoch 2"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert all(state["step"] == 1 for state in optimizer.state_dict()["state"].values())
    assert len(optimizer.state_dict()["state"]) == len(list(model.parameters()))
    with pytest.raises(ConfigError) as caught:
        _resumed_state(recipe("lenet", optimizer="adamw", epochs=1), SimpleNamespace(path=path), model, optimizer,
                       log.append)
    assert str(caught.value) == f"{path} has completed 2 epochs; --epochs 1 cannot shorten it"
    assert caught.value.field == "epochs"


@pytest.mark.parametrize("kept", ["model.safetensors", "result.json", "metrics.jsonl"])
def test_a_run_that_lost_its_checkpoint_is_not_resumed_from_the_start(kept: str, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from convzoo.errors import RunFileError
    from convzoo.models import create_model
    from convzoo.optim import make_optimizer
    from convzoo.train import _resumed_state

    model, log = create_model("lenet"), []
    optimizer = make_optimizer(model, recipe("lenet"))
    assert _resumed_state(recipe("lenet"), SimpleNamespace(path=tmp_path), model, optimizer, log.append) == (0, [])
    assert log == [f"resuming {tmp_path}: no epoch was completed, so it starts from the first"]
    (tmp_path / kept).write_text("")
    with pytest.raises(RunFileError) as caught:
        _resumed_state(recipe("lenet"), SimpleNamespace(path=tmp_path), model, optimizer, log.append)
    assert str(caught.value) == (f"{tmp_path} has no checkpoint.safetensors to continue from, though it completed "
                                 "epochs (the file was deleted); --overwrite trains it again from the start")
    assert caught.value.field == "resume"


def test_the_batches_are_cut_as_the_run_asks() -> None:
    from convzoo.distributed import Rank
    from convzoo.train import load_batches

    config = recipe("lenet", batch_size=8, eval_batch_size=6, seed=5, resize=32, augment=True, channels_last=True,
                    device="cpu")
    train, test, val = load_batches(config, torch.device("cpu"), None, data=_data())
    assert val is None
    assert (train.batch_size, train.shuffle, train.seed, train.resize, train.augment, train.rank, train.world_size,
            train.channels_last, train.min_last) == (8, True, 5, 32, True, 0, 1, True, 1)
    assert torch.equal(train.labels, torch.arange(40) % 10) and torch.equal(test.labels, torch.arange(20) % 10)
    assert (test.batch_size, test.shuffle, test.resize, test.augment, test.channels_last) == (6, False, 32, False, True)
    assert test.images.is_contiguous(memory_format=torch.channels_last)
    # rank 1 of 2: half of each global batch, its half of the test set; batch norm's two images each
    train, test, _ = load_batches(config, torch.device("cpu"), Rank(1, 2, 1), min_last=2, data=_data())
    assert (train.rank, train.world_size, train.min_last) == (1, 2, 2)
    assert torch.equal(test.labels, torch.arange(10, 20) % 10)
    held = load_batches(recipe("lenet", val_fraction=0.5, eval_batch_size=6, device="cpu"), torch.device("cpu"), None,
                        data=_data())
    assert len(held[0].labels) == 20 and len(held[2].labels) == 20 and held[2].batch_size == 6
    assert not held[2].shuffle and len(held[1].labels) == 20


@pytest.mark.parametrize("settings, data, rank, min_last, error", [
    ({"val_fraction": 0.01}, {}, None, 1,
     "--val-fraction 0.01 holds out no image of the 40 training images: raise it"),
    ({"batch_size": 9}, {}, (0, 2), 1, "--batch-size 9 is the global batch: it must divide by the 2 processes"),
    ({}, {"test": 0}, None, 1, "the test split has no images"),
    ({"batch_size": 4}, {"train": 2}, (0, 4), 1, "the training split has 2 images, fewer than the 4 process(es) "
     "training"),
    ({"batch_size": 4}, {}, (0, 4), 2, "--batch-size 4: lenet uses batch norm, which needs at least 2 images per "
     "training batch in each of the 4 process(es)"),
    ({"batch_size": 8}, {"train": 5}, (0, 4), 2, "--limit-train 5: lenet uses batch norm, which needs at least 2 "
     "images per training batch in each of the 4 process(es)"),
    ({"batch_size": 1}, {}, None, 2, "--batch-size 1: lenet uses batch norm, which needs at least 2 images per "
     "training batch in each of the 1 process(es)"),
])
def test_batches_that_cannot_work_are_refused(settings: dict, data: dict, rank: tuple | None, min_last: int,
                                              error: str) -> None:
    from convzoo.distributed import Rank
    from convzoo.errors import UserError
    from convzoo.train import load_batches

    with pytest.raises(UserError) as caught:
        load_batches(recipe("lenet", device="cpu", **settings), torch.device("cpu"),
                     None if rank is None else Rank(rank[0], rank[1], rank[0]), min_last=min_last, data=_data(**data))
    assert str(caught.value) == error


def test_batches_of_exactly_enough_images_are_cut() -> None:
    from convzoo.distributed import Rank
    from convzoo.train import load_batches

    train, _, _ = load_batches(recipe("lenet", batch_size=4, device="cpu"), torch.device("cpu"), Rank(0, 2, 0),
                               min_last=2, data=_data(train=4))
    assert len(train.labels) == 4
    train, _, _ = load_batches(recipe("lenet", batch_size=2, device="cpu"), torch.device("cpu"), Rank(1, 2, 1),
                               data=_data(train=2))
    assert train.world_size == 2


def test_which_models_need_two_images_per_batch() -> None:
    from convzoo.models import create_model
    from convzoo.train import has_batch_norm

    assert not has_batch_norm(create_model("lenet")) and has_batch_norm(create_model("lenet_bn"))


def test_one_process_steps_and_evaluates_the_model_itself() -> None:
    from convzoo.models import create_model
    from convzoo.train import _wrap

    model = create_model("lenet")
    assert _wrap(model, recipe("lenet", device="cpu"), torch.device("cpu"), None) == (model, model)


@pytest.mark.slow
def test_compile_steps_and_evaluates_the_compiled_model() -> None:
    from convzoo.models import create_model
    from convzoo.train import _wrap

    model = create_model("lenet")
    step_model, eval_model = _wrap(model, recipe("lenet", compile=True, device="cpu"), torch.device("cpu"), None)
    assert isinstance(step_model, torch._dynamo.eval_frame.OptimizedModule) and step_model._orig_mod is model
    assert eval_model is step_model


def test_an_interrupted_run_says_what_it_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import train
    from convzoo.errors import RunInterrupted

    def interrupted(training, epoch, view):
        if epoch == 1:
            signal = KeyboardInterrupt("SIGTERM")
            signal.exit_code = 143
            raise signal
        return one_epoch(training, epoch, view)

    one_epoch = train.train_one_epoch
    monkeypatch.setattr(train, "train_one_epoch", interrupted)
    config = recipe("lenet", epochs=2, batch_size=32, limit_train=64, limit_test=32, data_dir=str(SLICE), device="cpu")
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted) as caught:
        fit(config, run, log=lambda _: None, progress=False)
    assert str(caught.value) == (f"SIGTERM; {run} keeps 1 completed epoch; continue with: convzoo train --resume "
                                 f"{run}") and caught.value.exit_code == 143
    monkeypatch.setattr(train, "train_one_epoch", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(RunInterrupted) as caught:
        fit(config, tmp_path / "other", log=lambda _: None, progress=False)
    assert str(caught.value) == "interrupted; nothing was written"  # a bare KeyboardInterrupt has no message
    assert caught.value.exit_code == 130


# --- the epochs around the loop, with the loop stubbed ----------------------------------------------------------------

def _training(tmp_path: Path, *, epochs: int = 3, start: int = 0, classes: tuple[str, ...] = ("a", "b", "c"),
              val: bool = False, rank=None):
    """A ``Training`` of ``epochs`` epochs from ``start`` whose batches are stand-ins that only count images."""
    from types import SimpleNamespace

    from convzoo.train import Training

    model = torch.nn.Linear(2, len(classes) or 10)
    return Training(recipe("lenet", epochs=epochs, device="cpu"), SimpleNamespace(path=tmp_path), rank,
                    torch.device("cpu"), model, "the evaluated model", torch.optim.SGD(model.parameters(), lr=0.1),
                    None, SimpleNamespace(num_examples=1000), SimpleNamespace(num_examples=1234), start, [],
                    classes=classes, val_batches=SimpleNamespace(num_examples=2345) if val else None)


@pytest.fixture
def stubbed_epochs(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict]:
    """``run(training, accuracies)``: ``train_epochs`` over epochs whose rows score ``accuracies``; what it
    checkpointed, logged, warned, showed and evaluated, and what it returned."""
    from types import SimpleNamespace

    from convzoo import train

    def run(training, accuracies: list[float]) -> dict:
        seen: dict = {"submitted": [], "log": [], "warned": [], "shown": [], "evaluated": []}
        split = "test_acc" if training.val_batches is None else "val_acc"

        def one_epoch(_training, epoch: int, _view) -> tuple[dict, object]:
            row = {"epoch": epoch + 1, "train_loss": 1.0, "train_acc": 0.5, split: accuracies[epoch], "lr": 0.1,
                   "seconds": 2.5, "examples_per_sec": 12345.6, "eval_seconds": 0.1}
            return row, f"evaluation of epoch {epoch + 1}"

        def final(model, batches, amp, tta, classes=None):
            seen["evaluated"].append((model, batches, amp, tta, classes))
            return SimpleNamespace(accuracy=0.75, count=1234)

        monkeypatch.setattr(train, "train_one_epoch", one_epoch)
        monkeypatch.setattr(train, "evaluate", final)
        monkeypatch.setattr(train, "snapshot_state", lambda model, optimizer, *, epoch, history: (
            model, optimizer, epoch, list(history)))
        writer = SimpleNamespace(submit=lambda path, snapshot, history: seen["submitted"].append(
            (path, snapshot, list(history))))
        view = SimpleNamespace(epoch_done=seen["shown"].append)
        seen["returned"] = train.train_epochs(training, writer, log=seen["log"].append, warn=seen["warned"].append,
                                              view=view)
        return seen

    return run


def test_each_epoch_is_checkpointed_logged_and_shown(tmp_path: Path, stubbed_epochs: Callable[..., dict]) -> None:
    training = _training(tmp_path)
    seen = stubbed_epochs(training, [0.5, 0.6, 0.7])
    rows = training.history
    assert [row["epoch"] for row in rows] == [1, 2, 3] and seen["shown"] == rows
    assert seen["submitted"] == [(tmp_path, (training.model, training.optimizer, e, rows[:e]), rows[:e])
                                 for e in (1, 2, 3)]
    assert seen["log"] == [f"epoch   {e}/3  loss 1.0000  train acc 0.5000  test acc {a}  2.5 s  12,346 ex/s"
                           for e, a in ((1, "0.5000"), (2, "0.6000"), (3, "0.7000"))]
    assert seen["returned"] == "evaluation of epoch 3" and seen["evaluated"] == []  # the last epoch's evaluation
    assert seen["warned"] == [] and training.warnings == []


def test_a_rank_other_than_0_checkpoints_nothing(tmp_path: Path, stubbed_epochs: Callable[..., dict]) -> None:
    from convzoo.distributed import Rank

    training = _training(tmp_path, rank=Rank(1, 2, 1))
    assert not training.main and _training(tmp_path, rank=Rank(0, 2, 0)).main and _training(tmp_path).main
    seen = stubbed_epochs(training, [0.5, 0.6, 0.7])
    assert seen["submitted"] == [] and len(seen["log"]) == 3  # (its log is fit's quiet one)


def test_a_run_held_at_chance_is_warned_of_once_stalled_and_at_its_end(tmp_path: Path,
                                                                       stubbed_epochs: Callable[..., dict]) -> None:
    """Three classes: chance is 1/3, and 0.34 is at it (within 0.02)."""
    training = _training(tmp_path)
    seen = stubbed_epochs(training, [0.34, 0.34, 0.34])
    stalled, finished = seen["warned"]
    assert stalled.startswith("lenet is not learning: test accuracy has stayed at chance (0.33) for 2 epochs "
                              "(0.3400, 0.3400); ")
    assert finished == "lenet finished at chance: test accuracy 0.3400 after 3 epochs; the model did not learn"
    assert training.warnings == [finished]


def test_a_run_that_fell_back_to_chance_is_warned_of(tmp_path: Path, stubbed_epochs: Callable[..., dict]) -> None:
    training = _training(tmp_path, epochs=2)
    seen = stubbed_epochs(training, [0.9, 0.34])
    fell, finished = seen["warned"]
    assert fell.startswith("lenet fell back to chance: test accuracy 0.3400 in epoch 2, after 0.9000 in epoch 1; ")
    assert finished == "lenet finished at chance: test accuracy 0.3400 after 2 epochs; the model did not learn"
    assert stubbed_epochs(_training(tmp_path, epochs=2, classes=()), [0.9, 0.34])["warned"] == []  # 10 classes


def test_with_a_validation_split_the_test_set_is_scored_once_at_the_end(tmp_path: Path,
                                                                        stubbed_epochs: Callable[..., dict]) -> None:
    training = _training(tmp_path, epochs=2, val=True)
    assert training.epoch_batches is training.val_batches and _training(tmp_path).epoch_batches.num_examples == 1234
    seen = stubbed_epochs(training, [0.5, 0.6])
    assert seen["evaluated"] == [("the evaluated model", training.test_batches, False, False, 3)]
    assert seen["log"][0] == "epoch   1/2  loss 1.0000  train acc 0.5000  val acc 0.5000  2.5 s  12,346 ex/s"
    assert seen["log"][-1] == ("the test set, scored once: accuracy 0.7500 on 1,234 images (the epochs were scored "
                               "on 2,345 validation images)")
    assert seen["returned"].accuracy == 0.75


def test_a_run_resumed_after_its_last_epoch_is_scored_on_the_test_set(tmp_path: Path,
                                                                      stubbed_epochs: Callable[..., dict]) -> None:
    training = _training(tmp_path, epochs=2, start=2, classes=())
    training.history.extend({"epoch": e, "test_acc": 0.5} for e in (1, 2))
    seen = stubbed_epochs(training, [])
    assert seen["evaluated"] == [("the evaluated model", training.test_batches, False, False, 10)]
    assert seen["log"] == [] and seen["submitted"] == [] and seen["returned"].accuracy == 0.75


def test_the_divergence_watch_knows_the_classes_and_the_run_directory(tmp_path: Path) -> None:
    training = _training(tmp_path, classes=("a", "b", "c"))
    assert training.watch.config is training.config and training.watch.num_classes == 3
    assert _training(tmp_path, classes=()).watch.num_classes == 10
    assert training.watch.resume_hint() == "nothing was written"  # no config.json yet
    from convzoo.models import create_model
    from convzoo.rundir import write_config

    write_config(tmp_path, training.config, create_model("lenet"), torch.device("cpu"), "convzoo train lenet")
    assert training.watch.resume_hint(lr=0.01) == "no epoch was completed, so nothing was kept"


def test_only_rank_0_writes_the_final_files_with_the_test_images_it_reads_itself(tmp_path: Path,
                                                                                   reports: list) -> None:
    """A rank of a torchrun job holds only its shard of the test images: rank 0 reads them all for the report."""
    from types import SimpleNamespace

    from convzoo.distributed import Rank
    from convzoo.models import create_model
    from convzoo.train import Training, finish

    config = recipe("lenet", epochs=1, limit_test=5, data_dir=str(SLICE), device="cpu")
    model = create_model("lenet")
    evaluation = SimpleNamespace(count=5, accuracy=0.4, per_class_accuracy=[0.5] * 10)

    def training(rank: Rank) -> Training:
        return Training(config, SimpleNamespace(path=tmp_path), rank, torch.device("cpu"), model, model, None, None,
                        None, None, 0, [{"epoch": 1, "test_acc": 0.4, "seconds": 1.0}], classes=tuple("abcdefghij"))

    from convzoo.rundir import write_config

    write_config(tmp_path, config, model, torch.device("cpu"), "torchrun ... convzoo train lenet")
    before = len(reports)  # (the module's reports so far)
    run = finish(training(Rank(1, 2, 1)), evaluation)
    assert run.model is None and run.test_acc == 0.4 and len(reports) == before
    assert {p.name for p in tmp_path.iterdir()} == {"config.json"}
    ranked = training(Rank(0, 2, 0))
    ranked.warnings.append("lenet finished at chance")
    run = finish(ranked, evaluation)
    assert run.model is model and not model.training and run.device == torch.device("cpu")
    assert run.config is config and run.warnings == ["lenet finished at chance"]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["warnings"] == ["lenet finished at chance"] and result["test_images"] == 5 and result["epochs"] == 1
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "result.json"}
    (evaluated, pictures), = reports[before:]
    images, labels = load_split("test", SLICE)
    assert pictures and torch.equal(evaluated.images, images[:5]) and torch.equal(evaluated.labels, labels[:5])
    assert json.loads((tmp_path / "result.json").read_text())["per_class_accuracy"] == dict.fromkeys("abcdefghij", 0.5)


@pytest.fixture
def built_steps(monkeypatch: pytest.MonkeyPatch) -> dict:
    """What ``set_up`` gave the training step, the optimizer and the memory check; the batch sizes trained on."""
    from convzoo import train
    from convzoo.step import TrainStep

    seen: dict = {"steps": [], "sizes": [], "optimizers": [], "fits": []}
    init, call, make_optimizer, check_fits = TrainStep.__init__, TrainStep.__call__, train.make_optimizer, \
        train.check_fits

    def record_init(self, model, loss_fn, optimizer, device, **kwargs) -> None:
        seen["steps"].append((loss_fn, device, kwargs))
        init(self, model, loss_fn, optimizer, device, **kwargs)

    def record_call(self, x: torch.Tensor, y: torch.Tensor) -> None:
        seen["sizes"].append(len(y))
        call(self, x, y)

    def record_optimizer(model, config, **kwargs):
        seen["optimizers"].append(kwargs)
        return make_optimizer(model, config, **kwargs)

    def record_fits(config, device, data=None) -> None:
        seen["fits"].append((config.batch_size, device))
        assert data is not None and data.num_classes == 10  # checked against the run's own data
        check_fits(config, device, data=data)

    monkeypatch.setattr(TrainStep, "__init__", record_init)
    monkeypatch.setattr(TrainStep, "__call__", record_call)
    monkeypatch.setattr(train, "make_optimizer", record_optimizer)
    monkeypatch.setattr(train, "check_fits", record_fits)
    return seen


def test_batch_norm_drops_a_last_batch_of_one_image(tmp_path: Path, built_steps: dict) -> None:
    """65 images in batches of 32: LeNet trains on the last image alone; LeNet with batch norm leaves it for another
    epoch's order (one image has no batch statistics)."""
    settings = dict(epochs=1, batch_size=32, limit_train=65, limit_test=16, data_dir=str(SLICE), device="cpu")
    fit(recipe("lenet_bn", label_smoothing=0.1, **settings), tmp_path / "bn", log=lambda _: None, progress=False)
    assert built_steps["sizes"] == [32, 32]
    (loss_fn, device, kwargs), = built_steps["steps"]
    assert isinstance(loss_fn, torch.nn.CrossEntropyLoss) and loss_fn.label_smoothing == 0.1
    assert device == torch.device("cpu") and kwargs == {"amp": False, "cuda_graph": False, "batch_size": 32}
    assert built_steps["optimizers"] == [{"device": torch.device("cpu"), "graphable": False}]
    assert built_steps["fits"] == [(32, torch.device("cpu"))]
    fit(recipe("lenet", **settings), tmp_path / "bn", overwrite=True, log=lambda _: None, progress=False)
    assert built_steps["sizes"] == [32, 32, 32, 32, 1]
    assert built_steps["steps"][1][0].label_smoothing == 0.0


def test_the_world_of_a_run() -> None:
    from convzoo.distributed import Rank
    from convzoo.train import _world

    assert _world(None) == 1 and _world(Rank(2, 4, 2)) == 4


@pytest.fixture
def one_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables torchrun sets for a job of one process: ``fit`` trains as rank 0 of 1, in a real gloo group."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)


def test_a_torchrun_job_of_one_rank_trains_and_leaves_its_group(tmp_path: Path, one_rank: None, reports: list) -> None:
    from convzoo import train

    seeds, manual_seed = [], torch.manual_seed
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train.torch, "manual_seed", lambda seed: seeds.append(seed) or manual_seed(seed))
        config = recipe("lenet", epochs=2, batch_size=32, limit_train=64, limit_test=20, data_dir=str(SLICE),
                        device="cpu", seed=4)
        result = fit(config, tmp_path / "run", log=lambda _: None, progress=False)
    assert not torch.distributed.is_initialized() and result.epochs == 2
    assert [s for s in seeds if s != 4] == [hash((4, 0, 0)), hash((4, 1, 0))]  # dropout: per rank and epoch
    evaluated, _ = reports[-1]
    assert evaluated.run is result and torch.equal(evaluated.labels, load_split("test", SLICE)[1][:20])


@pytest.mark.parametrize("error, raised", [
    (RuntimeError("[gloo/transport/tcp/pair.cc:537] Connection closed by peer"),
     "lost contact with the other ranks ([gloo/transport/tcp/pair.cc:537] Connection closed by peer); another rank "
     "probably failed (see its error)"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "mat1 and mat2 shapes cannot be multiplied"),
])
def test_a_rank_that_lost_its_peers_says_so(error: RuntimeError, raised: str, tmp_path: Path, one_rank: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo import train
    from convzoo.distributed import PeerFailure

    monkeypatch.setattr(train, "train_one_epoch", lambda *_: (_ for _ in ()).throw(error))
    config = recipe("lenet", epochs=1, batch_size=32, limit_train=64, limit_test=20, data_dir=str(SLICE), device="cpu")
    with pytest.raises((RuntimeError, PeerFailure)) as caught:
        fit(config, tmp_path / "run", log=lambda _: None, progress=False)
    assert str(caught.value) == raised and isinstance(caught.value, PeerFailure) == ("lost" in raised)
    assert not torch.distributed.is_initialized()
    # one process: the error is the error
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(RuntimeError) as caught:
        fit(config, tmp_path / "alone", log=lambda _: None, progress=False)
    assert caught.value is error


def test_a_warning_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from convzoo.train import _quiet, _warn

    _warn("lenet is not learning")
    _quiet("nothing")
    assert capsys.readouterr() == ("", "warning: lenet is not learning\n")


@pytest.mark.parametrize("channels", [1, 3])
def test_one_process_reports_the_test_images_it_holds(channels: int, tmp_path: Path, reports: list) -> None:
    """Gray images go to the report as (N, H, W), colour ones as (N, 3, H, W), in plain (not channels-last) order."""
    from types import SimpleNamespace

    from convzoo.models import create_model
    from convzoo.rundir import write_config
    from convzoo.train import Training, finish

    config = recipe("lenet", epochs=1, device="cpu")
    model = create_model("lenet")
    write_config(tmp_path, config, model, torch.device("cpu"), "convzoo train lenet")
    images = torch.arange(5 * channels * 16, dtype=torch.uint8).reshape(5, channels, 4, 4)
    held = SimpleNamespace(images=images.to(memory_format=torch.channels_last), labels=torch.arange(5))
    training = Training(config, SimpleNamespace(path=tmp_path), None, torch.device("cpu"), model, model, None, None,
                        None, held, 0, [{"epoch": 1, "test_acc": 0.4, "seconds": 1.0}], classes=tuple("abcdefghij"))
    finish(training, SimpleNamespace(count=5, accuracy=0.4, per_class_accuracy=[1 / 3] * 10))
    per_class = json.loads((tmp_path / "result.json").read_text())["per_class_accuracy"]
    assert per_class == dict.fromkeys("abcdefghij", 0.3333)  # to 4 places
    evaluated, _ = reports[-1]
    expected = images[:, 0] if channels == 1 else images
    assert evaluated.images.shape == expected.shape and torch.equal(evaluated.images, expected)
    assert evaluated.images.is_contiguous() and torch.equal(evaluated.labels, torch.arange(5))
