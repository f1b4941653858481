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
from PIL import Image

from convzoo.checkpoint import load_model
from convzoo.config import recipe
from convzoo.data import load_split
from convzoo.data.source import DEBIAN_DIR
from convzoo.run import Run
from convzoo.train import fit

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LeNet run on the committed slice of the real data (AdamW, so it learns in 2 epochs)."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    config = recipe("lenet", optimizer="adamw", lr=0.005, batch_size=32, epochs=2, data_dir=str(SLICE), device="cpu")
    fit(config, out, log=lambda _: None, progress=False)
    return out


# --- the run directory ------------------------------------------------------------------------

def test_run_directory_has_everything(lenet_run: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors",
                 "curves.png", "confusion.png", "result.json"):
        assert (lenet_run / name).is_file(), name
    assert not list(lenet_run.glob(".*tmp*")), "temporary files left behind"
    meta = json.loads((lenet_run / "config.json").read_text())
    assert meta["config"]["model"] == "lenet" and meta["model"]["name"] == "lenet"
    assert meta["versions"]["torch"] == torch.__version__ and meta["device"] == "cpu" and meta["command"]
    rows = [json.loads(line) for line in (lenet_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert set(r) >= {"epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_sec"}
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    result = json.loads((lenet_run / "result.json").read_text())
    assert result["test_acc"] == rows[-1]["test_acc"] > 0.4
    assert Image.open(lenet_run / "curves.png").size[0] > 200


def test_model_file_rebuilds_its_model(lenet_run: Path) -> None:
    model = load_model(lenet_run / "model.safetensors")
    assert model.config["name"] == "lenet" and not model.training
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_eval_reproduces_the_training_accuracy(lenet_run: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = run_cli("eval", str(lenet_run), "--json", "--data-dir", str(SLICE))
    assert code == 0
    report = json.loads(out.strip().splitlines()[-1])
    result = json.loads((lenet_run / "result.json").read_text())
    assert report["test_acc"] == pytest.approx(result["test_acc"], abs=1e-9)
    assert report["num_examples"] == 1000 and len(report["per_class_accuracy"]) == 10


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
    (True, True, False), (False, False, False), (True, True, True),
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

@pytest.fixture(scope="module")
def spied_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two epochs of LeNet over 300 images in batches of 64 (4 full batches and one of 44), one-cycle schedule,
    150 test images in evaluation batches of 64; what the loop asked of the step, the batches and the evaluation."""
    from convzoo import train
    from convzoo.data import Batches
    from convzoo.step import TrainStep

    seen: dict = {"lr": [], "epochs": [], "evaluations": [], "batch_sizes": []}
    set_lr, set_epoch, step_call, evaluate = TrainStep.set_lr, Batches.set_epoch, TrainStep.__call__, train.evaluate

    def record_lr(self, lr: float) -> None:
        seen["lr"].append(lr)
        set_lr(self, lr)

    def record_epoch(self, epoch: int) -> None:
        if self.shuffle:  # the training batches (the test batches are never shuffled)
            seen["epochs"].append(epoch)
        set_epoch(self, epoch)

    def record_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        seen["batch_sizes"].append(len(y))
        step_call(self, x, y)

    def record_evaluation(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        seen["evaluations"].append(result)
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainStep, "set_lr", record_lr)
        mp.setattr(Batches, "set_epoch", record_epoch)
        mp.setattr(TrainStep, "__call__", record_step)
        mp.setattr(train, "evaluate", record_evaluation)
        config = recipe("lenet", schedule="onecycle", lr=0.2, epochs=2, batch_size=64, limit_train=300,
                        limit_test=150, eval_batch_size=64, data_dir=str(SLICE), device="cpu")
        out = tmp_path_factory.mktemp("spied") / "run"
        seen["result"] = fit(config, out, log=lambda _: None, progress=False)
    seen["out"], seen["config"] = out, config
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
