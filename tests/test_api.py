"""The Python API: train, load, predict, evaluate, recipes and plans, with errors in Python's terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo import api
from convzoo.data import CLASSES, load_split
from convzoo.errors import ConfigError, DivergenceError, RunFileError
from convzoo.estimate import Plan

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
SMALL = {"optimizer": "adamw", "lr": 0.005, "batch_size": 32, "epochs": 2, "data_dir": str(SLICE), "device": "cpu",
         "limit_train": 512, "limit_test": 200, "progress": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> api.Run:
    return api.train("lenet", tmp_path_factory.mktemp("runs") / "lenet", **SMALL)


def test_train_returns_the_trained_run(trained: api.Run) -> None:
    result = json.loads((trained.run_dir / "result.json").read_text())
    assert trained.config.model == "lenet" and trained.config.epochs == 2 and len(trained.history) == 2
    assert trained.test_acc == trained.result["test_acc"] == result["test_acc"]
    assert not trained.model.training and trained.device == torch.device("cpu")


def test_load_gives_the_same_run_and_evaluate_its_accuracy(trained: api.Run) -> None:
    run = api.load(trained.run_dir, device="cpu")
    assert run.config == trained.config and run.history == trained.history
    for name, value in trained.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], value), name
    evaluation = run.evaluate(progress=False)
    assert evaluation.count == 200 and evaluation.accuracy == pytest.approx(trained.test_acc, abs=1e-9)


def test_predict_takes_paths_pil_images_tensors_and_arrays(trained: api.Run, tmp_path: Path) -> None:
    images = load_split("test", SLICE)[0][:4]
    with torch.no_grad():
        expected = trained.model(images[:, None].float() / 255).argmax(1).tolist()
    for i, image in enumerate(images):
        Image.fromarray(image.numpy()).save(tmp_path / f"{i}.png")
    forms = {
        "folder": tmp_path, "glob": str(tmp_path / "*.png"), "paths": [tmp_path / f"{i}.png" for i in range(4)],
        "PIL images": [Image.open(tmp_path / f"{i}.png") for i in range(4)],
        "uint8 (N, H, W)": images, "float (N, 1, H, W) in [0, 1]": images[:, None].float() / 255,
        "float in [0, 255]": images.double(), "numpy (N, H, W, 3)": np.stack([images.numpy()] * 3, axis=-1),
    }
    for name, form in forms.items():
        predictions = trained.predict(form, top_k=2)
        assert [p.label for p in predictions] == expected, name
        assert all(len(p.top) == 2 and p.unlike_training_data is None for p in predictions), name
    assert [p.image for p in trained.predict(tmp_path)] == [str(tmp_path / f"{i}.png") for i in range(4)]
    mixed = trained.predict([tmp_path / "0.png", images[1:3]])
    assert [p.image for p in mixed] == [str(tmp_path / "0.png"), "image 1", "image 2"]
    (blank,) = trained.predict(Image.new("L", (90, 120), 255))
    assert blank.unlike_training_data is not None and blank.unlike_training_data.startswith("blank")


def test_running_the_same_cell_again_says_what_to_pass(trained: api.Run) -> None:
    with pytest.raises(ConfigError) as error:
        api.train("lenet", trained.run_dir, **SMALL)
    message = str(error.value)
    assert "resume=True" in message and "overwrite=True" in message and "--" not in message


def test_resume_continues_and_overwrite_replaces(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = api.train("lenet", out, **{**SMALL, "epochs": 1})
    more = api.train(out=out, resume=True, epochs=2, progress=False)
    assert len(more.history) == 2 and more.history[0] == first.history[0]
    with pytest.raises(ConfigError, match=r"batch_size cannot change .*only epochs, lr, device, data_dir"):
        api.train(out=out, resume=True, batch_size=64, progress=False)
    again = api.train("lenet", out, overwrite=True, **{**SMALL, "epochs": 1})
    assert len(again.history) == 1


def test_errors_and_warnings_name_python_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"^lr must be a positive number, got -1"):
        api.train("lenet", tmp_path / "a", lr=-1)
    with pytest.raises(TypeError, match="unknown settings"):
        api.train("lenet", tmp_path / "a", learning_rate=0.1)
    with pytest.raises(DivergenceError) as error:
        api.train("lenet", tmp_path / "b", **{**SMALL, "optimizer": "sgd", "lr": 1e38})
    message = str(error.value)
    # It diverged in its first epoch, so nothing was kept (the resume form is checked below, with a kept epoch).
    assert "--" not in message and "lr=1e+37" in message and message.endswith("no epoch was completed, so nothing "
                                                                              "was kept")
    api.train("lenet", tmp_path / "c", **{**SMALL, "optimizer": "sgd", "lr": 5})
    err = capsys.readouterr().err
    assert "warning: lenet is not learning" in err and "lr=0.5" in err and "--" not in err


def test_an_unfinished_run_says_how_to_resume_it(trained: api.Run, tmp_path: Path) -> None:
    unfinished = api.Run(tmp_path, trained.config, trained.model, trained.device)
    with pytest.raises(RunFileError, match=r"continue it with train\(out='.*', resume=True\)"):
        unfinished.result  # noqa: B018  (a property that reads result.json)


def test_each_door_words_the_same_error_its_own_way(tmp_path: Path, run_cli) -> None:
    """One message, built once with ``convzoo.terms``: flags on the command line, arguments in Python."""
    (tmp_path / "x").write_text("")
    cases = [  # (the command line's arguments, the API call, what each says)
        (["train", "lenet", "--lr", "-1"], lambda: api.train("lenet", tmp_path / "a", lr=-1),
         "--lr must be a positive number, got -1.0", "lr must be a positive number, got -1"),
        (["train", "lenet", "--device", "cuda"], lambda: api.train("lenet", tmp_path / "a", device="cuda"),
         "--device cuda: CUDA is not available on this machine (use --device cpu or auto)",
         "device='cuda': CUDA is not available on this machine (use device='cpu' or auto)"),
        (["train", "lenet", "--out", str(tmp_path / "x")], lambda: api.train("lenet", tmp_path / "x"),
         f"--out {tmp_path / 'x'} exists and is not a directory",
         f"out='{tmp_path / 'x'}' exists and is not a directory"),
        (["train", "lenet", "--optimizer", "x"], lambda: api.train("lenet", tmp_path / "a", optimizer="x"),
         "invalid choice: 'x'", "optimizer must be one of sgd, adamw, got 'x'"),
    ]
    for argv, call, cli_says, python_says in cases:
        code, _, err = run_cli(*argv)
        assert code == 2 and cli_says in err, argv
        with pytest.raises(ConfigError) as error:
            call()
        assert str(error.value).startswith(python_says) and "--" not in str(error.value), argv


def test_errors_carry_their_field() -> None:
    with pytest.raises(ConfigError) as error:
        api.train("lenet", "unused", batch_size=0)
    assert error.value.field == "batch_size" and str(error.value) == "batch_size must be at least 1, got 0"


def test_values_of_the_wrong_type_are_refused_before_anything_is_created(tmp_path: Path) -> None:
    for name, value in [("epochs", True), ("lr", "0.1"), ("batch_size", 1.5), ("augment", 1), ("data_dir", 3)]:
        with pytest.raises(ConfigError) as error:
            api.train("lenet", tmp_path / "run", **{name: value})
        assert error.value.field == name and str(error.value).startswith(f"{name} must be "), name
    assert not (tmp_path / "run").exists()
    for empty in ("", " "):
        with pytest.raises(ConfigError, match="out must not be empty"):
            api.train("lenet", empty)


def test_recipes_and_plan() -> None:
    alexnet = api.recipes("alexnet")
    assert (alexnet["d2l"]["lr"], alexnet["d2l"]["input_size"], alexnet["fast"]["schedule"]) == (0.01, 224, "onecycle")
    plan = api.plan("lenet", epochs=1, data_dir=str(SLICE), device="cpu", limit_train=256)
    assert isinstance(plan, Plan) and plan.train_images == 256 and plan.steps_per_epoch == 1 and plan.seconds > 0


def test_show_results_shows_the_mistakes_by_loss_and_prints_the_most_confused(trained: api.Run,
                                                                              capsys: pytest.CaptureFixture[str]
                                                                              ) -> None:
    figure = trained.show_results(count=4)
    printed = capsys.readouterr().out.splitlines()
    evaluation = trained.evaluate(progress=False)
    assert len(printed) == len(evaluation.most_confused(5)) and all(" taken for " in line for line in printed)
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    surest = evaluation.top_losses(4)
    expected = [f"pred: {CLASSES[int(evaluation.predictions[i])]} {float(evaluation.confidences[i]):.0%}"
                for i in surest]
    assert [t for t in texts if t.startswith("pred: ")] == expected
