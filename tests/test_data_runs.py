"""Runs on data other than Fashion-MNIST (``--data``): trained, evaluated, predicted, resumed through the real commands.

The folders are PNG trees made from the committed slice (gray) and tiny colour images made with Pillow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from convzoo import api
from convzoo.config import recipe
from convzoo.data import CLASSES, load_split
from convzoo.errors import ConfigError
from convzoo.evaluate import run_data, splits

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
NAMES = ("shirt-ish", "trousers", "Zebra")  # folder order is sorted(): "Zebra" < "shirt-ish" < "trousers"
FAST = ("--epochs", "1", "--optimizer", "adamw", "--lr", "0.005", "--batch-size", "16", "--device", "cpu")


def write_pool(root: Path, per_class: int = 16) -> Path:
    """``root/<name>/<n>.png``: the first ``per_class`` slice images of labels 0, 1, 2, named by ``NAMES``."""
    images, labels = load_split("train", SLICE)
    for label, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for n, i in enumerate(torch.nonzero(labels == label).flatten()[:per_class].tolist()):
            Image.fromarray(images[i].numpy()).save(root / name / f"{n}.png")
    return root


def write_colour(root: Path, per_class: int = 10) -> Path:
    """``root/{blue,red}/<n>.png``: 12x12 RGB noise, each class bright in its own channel."""
    generator = torch.Generator().manual_seed(0)
    for channel, name in ((2, "blue"), (0, "red")):
        (root / name).mkdir(parents=True)
        for n in range(per_class):
            pixels = (torch.rand(12, 12, 3, generator=generator) * 60).to(torch.uint8)
            pixels[..., channel] += 150
            Image.fromarray(pixels.numpy()).save(root / name / f"{n}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LeNet trained for one epoch on a pool folder through the command line: (folder, run directory)."""
    from convzoo import cli

    root = tmp_path_factory.mktemp("wire")
    pool = write_pool(root / "pool")
    out = root / "run"
    assert cli.main(["train", "lenet", "--data", str(pool), "--limit-train", "30", *FAST, "--out", str(out)]) == 0
    return pool, out


def test_a_folder_run_records_its_data_and_classes(folder_run):
    pool, out = folder_run
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["data"] == str(pool)
    assert meta["data"]["classes"] == sorted(NAMES) and meta["data"]["channels"] == 1 and meta["data"]["size"] == 28
    assert meta["data"]["split"] == {"rule": "stratified", "test_fraction": 0.2, "seed": 0}
    assert meta["model"]["num_classes"] == 3 and meta["model"]["in_channels"] == 1
    result = json.loads((out / "result.json").read_text())
    assert sorted(result["per_class_accuracy"]) == sorted(NAMES)
    assert api.load(out, "cpu").classes == tuple(sorted(NAMES))


def test_limit_train_on_a_folder_draws_from_every_class(folder_run):
    pool, out = folder_run
    config = api.load(out, "cpu").config
    train_labels = splits(config, run_data(config, warn=None))[1]
    assert len(train_labels) == 30 and set(train_labels.tolist()) == {0, 1, 2}  # not the first class's 30


def test_eval_and_predict_name_the_folders_classes(folder_run, run_cli):
    pool, out = folder_run
    code, stdout, _ = run_cli("eval", str(out))
    assert code == 0 and "on 9 images" in stdout  # round(0.2 * 16) = 3 test images per class
    assert [line.split()[0] for line in stdout.splitlines()[1:4]] == sorted(NAMES)
    code, stdout, _ = run_cli("predict", str(out), str(pool / "trousers" / "0.png"), "--json")
    [row] = json.loads(stdout)
    assert code == 0 and row["class"] in NAMES and len(row["top_k"]) == 3
    assert {r["class"] for r in row["top_k"]} == set(NAMES) and row["unlike_training_data"] is False
    code, _, err = run_cli("predict", str(out), str(pool / "Zebra" / "0.png"), "--top-k", "4")
    assert code == 2 and "--top-k must be between 1 and 3, got 4" in err


def test_resume_refuses_a_folder_whose_classes_changed(folder_run, run_cli, tmp_path):
    pool, out = folder_run
    moved = tmp_path / "run"
    for f in out.iterdir():  # a copy of the run's files: the run itself is left alone
        if f.is_file():
            (moved / f.name).parent.mkdir(exist_ok=True)
            (moved / f.name).write_bytes(f.read_bytes())
    (moved / "model.safetensors").unlink()
    other = write_pool(tmp_path / "other")
    (other / "Zebra").rename(other / "Aardvark")
    code, _, err = run_cli("train", "--resume", str(moved), "--epochs", "2", "--data-dir", str(other))
    assert code == 2 and "continues only on the data it started with" in err


def test_a_colour_folder_trains_a_three_channel_network_and_predicts(tmp_path, run_cli):
    colour = write_colour(tmp_path / "colour")
    out = tmp_path / "run"
    code, _, err = run_cli("train", "lenet", "--data", str(colour), *FAST, "--out", str(out))
    assert code == 0, err
    run = api.load(out, "cpu")
    assert run.model.config["in_channels"] == 3 and run.classes == ("blue", "red")
    assert run.data["channels"] == 3 and run.data["size"] == 12
    code, stdout, _ = run_cli("predict", str(out), str(colour / "red" / "3.png"))
    assert code == 0 and stdout.startswith(f"{colour / 'red' / '3.png'}: ") and "unlike" not in stdout
    pil = Image.open(colour / "blue" / "0.png")
    tensor = torch.zeros(2, 3, 20, 20, dtype=torch.uint8)
    predictions = run.predict([pil, tensor])
    assert [p.class_name in ("blue", "red") for p in predictions] == [True, True, True]
    assert len(predictions[0].top) == 2  # all classes of a run of fewer than 3
    code, stdout, _ = run_cli("train", "lenet", "--data", str(colour), "--grayscale", *FAST, "--out",
                              str(tmp_path / "gray"))
    assert code == 0 and api.load(tmp_path / "gray", "cpu").model.config["in_channels"] == 1


def test_a_run_written_before_data_choices_still_evaluates_and_resumes(tmp_path, run_cli):
    out = tmp_path / "old"
    code, _, err = run_cli("train", "lenet", "--data-dir", str(SLICE), "--limit-train", "64", "--limit-test", "50",
                           *FAST, "--out", str(out))
    assert code == 0, err
    before = run_cli("eval", str(out), "--json")[1]
    path = out / "config.json"
    meta = json.loads(path.read_text())
    del meta["data"]
    for key in ("data", "grayscale", "data_size", "test_fraction"):
        del meta["config"][key]
    path.write_text(json.dumps(meta))
    (out / "model.safetensors").unlink()  # interrupted before its end: resumed below
    code, _, err = run_cli("train", "--resume", str(out), "--epochs", "2")
    assert code == 0, err
    code, after, _ = run_cli("eval", str(out), "--json")
    assert code == 0 and list(json.loads(after)["per_class_accuracy"]) == list(CLASSES)
    assert json.loads(before)["num_examples"] == json.loads(after)["num_examples"] == 50


def test_fashion_mnist_reads_the_same_tensors_as_before():
    config = recipe("lenet", data_dir=str(SLICE), limit_train=100, limit_test=70)
    train_x, train_y, test_x, test_y = splits(config, run_data(config))
    old_train, old_test = load_split("train", SLICE), load_split("test", SLICE)
    assert torch.equal(train_x[:, 0], old_train[0][:100]) and torch.equal(train_y, old_train[1][:100])
    assert torch.equal(test_x[:, 0], old_test[0][:70]) and torch.equal(test_y, old_test[1][:70])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, float("nan")])
def test_api_refuses_a_bad_test_fraction_before_creating_anything(tmp_path, fraction):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^test_fraction must be between 0 and 1") as caught:
        api.train("lenet", out, data=str(tmp_path), test_fraction=fraction)
    assert caught.value.field == "test_fraction" and not out.exists()


def test_a_relative_folder_is_recorded_by_its_absolute_path(tmp_path, monkeypatch):
    write_colour(tmp_path / "colour", per_class=2)
    monkeypatch.chdir(tmp_path)
    from convzoo.rundir import resolve_run

    config, _ = resolve_run("lenet", tmp_path / "r", data="colour")
    assert config.data == str(tmp_path / "colour")
    assert resolve_run("lenet", tmp_path / "r", data="mnist")[0].data == "mnist"


@pytest.mark.parametrize("edit", [{"classes": "abc"}, {"classes": ["a"]}, {"classes": ["a", "b"]}, {"channels": 3},
                                  {"classes": [1, 2, 3]}])
def test_an_edited_data_entry_is_refused(folder_run, tmp_path, run_cli, edit):
    _, out = folder_run
    copy = tmp_path / "run"
    copy.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    meta = json.loads((copy / "config.json").read_text())
    meta["data"].update(edit)
    (copy / "config.json").write_text(json.dumps(meta))
    code, _, err = run_cli("eval", str(copy))
    assert code == 2 and err == f"error: {copy}/config.json has values of the wrong type for data; the file was " \
                                "edited or damaged\n"


def test_the_command_line_names_test_fraction_as_its_flag(tmp_path, run_cli):
    code, _, err = run_cli("train", "lenet", "--data", str(tmp_path), "--test-fraction", "1", "--out",
                           str(tmp_path / "run"))
    assert code == 2 and err == "error: --test-fraction must be between 0 and 1 (exclusive), got 1.0\n"
    assert not (tmp_path / "run").exists()
