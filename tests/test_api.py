"""The Python API: train, load, predict, evaluate, recipes and plans, with errors in Python's terms."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

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


# --- a Run from its parts (no training) ------------------------------------------------------------------------------


def _row(epoch: int, seconds: float = 1.0, **score: float) -> dict:
    return {"epoch": epoch, "train_loss": 0.5, "train_acc": 0.75, **score, "lr": 0.1, "seconds": seconds,
            "eval_seconds": 0.25}


@pytest.fixture
def two_classes(tmp_path: Path) -> Path:
    """A run directory's config.json for a LeNet of two classes, cat and dog."""
    from convzoo.config import recipe
    from convzoo.models import create_model
    from convzoo.rundir import write_config

    data = {"data": "/photos", "classes": ["cat", "dog"], "channels": 1, "size": 28}
    write_config(tmp_path, recipe("lenet"), create_model("lenet", num_classes=2), torch.device("cpu"), "c", data)
    return tmp_path


def test_a_run_scored_on_the_test_set_each_epoch(two_classes: Path) -> None:
    from convzoo.config import recipe

    history = [_row(1, 1.2344, test_acc=0.25), _row(2, 2.0, test_acc=0.875)]
    run = api.Run(two_classes, recipe("lenet"), None, torch.device("cpu"), history, ["a warning"])
    assert (run.test_acc, run.val_acc, run.epochs, run.train_seconds) == (0.875, None, 2, 3.7344)
    assert run.classes == ("cat", "dog") and run.data["data"] == "/photos" and run.meta["command"] == "c"
    assert run.learned
    json_ = run.to_json()
    assert json_ == {"run_dir": str(two_classes), "test_acc": 0.875, "train_seconds": 3.734, "epochs": 2,
                     "learned": True, "warnings": ["a warning"]}
    run.history[-1]["test_acc"] = 0.5  # at chance for two classes (not for ten)
    assert not run.learned and run.to_json()["learned"] is False
    run.evaluation = SimpleNamespace(accuracy=0.625)  # training's own evaluation, not rounded
    assert run.test_acc == 0.625 and run.learned


def test_a_run_scored_on_a_validation_split_takes_its_test_accuracy_from_result_json(two_classes: Path) -> None:
    from convzoo.config import recipe
    from convzoo.rundir import write_result

    run = api.Run(two_classes, recipe("lenet"), None, torch.device("cpu"), [_row(1, val_acc=0.5),
                                                                             _row(2, val_acc=0.75)])
    write_result(two_classes, {"test_acc": 0.875, "train_seconds": 2.5, "epochs": 2}, {})
    assert (run.test_acc, run.val_acc) == (0.875, 0.75)
    json_ = run.to_json()
    assert list(json_) == ["run_dir", "test_acc", "val_acc", "train_seconds", "epochs", "learned", "warnings"]
    assert json_ == {"run_dir": str(two_classes), "test_acc": 0.875, "val_acc": 0.75, "train_seconds": 2.5,
                     "epochs": 2, "learned": True, "warnings": []}
    assert api.Run(two_classes, recipe("lenet"), None, torch.device("cpu")).val_acc is None
    assert api.Run(two_classes, recipe("lenet"), None, torch.device("cpu"), [_row(1, val_acc=0)]).val_acc == 0


def test_an_evaluated_run_is_its_run_seen_with_its_images(trained: api.Run) -> None:
    from convzoo.run import EvaluatedRun

    images, labels = torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([0, 1])
    evaluation = SimpleNamespace(accuracy=0.5)
    scored = EvaluatedRun(trained, evaluation, images, labels)
    assert scored.run_dir == trained.run_dir and scored.config is trained.config and scored.meta is trained.meta
    assert scored.history is trained.history and scored.model is trained.model and scored.classes == tuple(CLASSES)
    assert scored.evaluation is evaluation and scored.images is images and scored.labels is labels
    evaluated = trained.evaluated()
    assert evaluated.run is trained and evaluated.images.shape == (200, 28, 28) and evaluated.labels.shape == (200,)
    assert evaluated.evaluation.count == 200 and evaluated.evaluation.accuracy == pytest.approx(trained.test_acc)


def test_opening_a_run_reads_its_history_and_puts_the_network_on_the_device(trained: api.Run) -> None:
    run = api.Run.open(str(trained.run_dir), device="cpu")
    assert run.run_dir == trained.run_dir and isinstance(run.run_dir, Path) and run.device == torch.device("cpu")
    assert run.history == trained.history and run.warnings == [] and run.evaluation is None
    assert run.to_json() == {**trained.to_json(), "test_acc": trained.history[-1]["test_acc"], "warnings": []}


def test_a_pretrained_run_loads_from_the_package(tmp_path: Path) -> None:
    run = api.load_pretrained("lenet", device="cpu")
    assert run.config.model == "lenet" and run.device == torch.device("cpu") and run.run_dir.name == "lenet"
    assert not run.model.training and run.epochs == len(run.history) > 0


RECIPE_FIELDS = ["amp", "augment", "batch_size", "epochs", "init", "input_size", "label_smoothing", "lr", "momentum",
                 "schedule", "tta", "weight_decay"]


def test_recipes_show_each_recipes_own_settings() -> None:
    from convzoo.config import recipe

    lenet = api.recipes("lenet")
    assert list(lenet) == ["d2l", "fast"] and all(sorted(settings) == RECIPE_FIELDS for settings in lenet.values())
    assert lenet["fast"] == {name: getattr(recipe("lenet", "fast"), name) for name in RECIPE_FIELDS}
    assert lenet["d2l"]["lr"] == 0.9 and lenet["d2l"]["epochs"] == 10


def test_plan_counts_the_epochs_a_resumed_run_has_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo.checkpoint import snapshot_state, write_state
    from convzoo.config import recipe
    from convzoo.models import create_model
    from convzoo.rundir import write_config

    planned: list[tuple] = []
    monkeypatch.setattr(api, "plan_run", lambda config, **given: planned.append((config, given)) or "plan")
    out = tmp_path / "run"
    out.mkdir()
    model = create_model("lenet")
    write_config(out, recipe("lenet", epochs=5), model, torch.device("cpu"), "c")
    write_state(out / "checkpoint.safetensors", snapshot_state(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                                               epoch=3, history=[]))
    assert api.plan(out=out, resume=True, epochs=6) == "plan"
    assert api.plan("lenet", out, recipe="fast", epochs=2) == "plan"
    assert api.plan("lenet") == "plan"
    assert planned == [(recipe("lenet", epochs=6), {"done_epochs": 3, "run_dir": out}),
                       (recipe("lenet", "fast", epochs=2), {"done_epochs": 0, "run_dir": out}),
                       (recipe("lenet"), {"done_epochs": 0, "run_dir": Path("runs/lenet-d2l-seed0")})]


def test_train_hands_fit_the_run_its_view_and_its_callbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convzoo.config import recipe

    calls: list[dict] = []
    monkeypatch.setattr(api, "fit", lambda config, run_dir, **given: calls.append({"config": config,
                                                                                  "run_dir": run_dir, **given}) or 7)
    monkeypatch.setattr(api, "progress_for", lambda progress, tensorboard: ("view", progress, tensorboard))

    def log(line: str) -> None:
        pass

    assert api.train("lenet", tmp_path / "a", progress="log", tensorboard=True, log=log, command="cmd", epochs=3) == 7
    assert calls.pop() == {"config": recipe("lenet", epochs=3), "run_dir": tmp_path / "a", "resume": False,
                           "overwrite": False, "progress": ("view", "log", tmp_path / "tensorboard" / "a"), "log": log,
                           "command": "cmd"}
    api.train("lenet", str(tmp_path / "b"), overwrite=True, tensorboard=tmp_path / "tb")
    assert calls.pop() == {"config": recipe("lenet"), "run_dir": tmp_path / "b", "resume": False, "overwrite": True,
                           "progress": ("view", None, tmp_path / "tb"), "log": print, "command": None}
    for tensorboard in (None, False, ""):
        api.train("lenet", tmp_path / "c", recipe="fast", tensorboard=tensorboard, progress=False)
        assert calls.pop()["progress"] == ("view", False, None)
    (tmp_path / "d").mkdir()
    from convzoo.models import create_model
    from convzoo.rundir import write_config

    write_config(tmp_path / "d", recipe("lenet"), create_model("lenet"), torch.device("cpu"), "c")
    api.train(out=tmp_path / "d", resume=True, epochs=12)
    call = calls.pop()
    assert (call["config"], call["run_dir"], call["resume"], call["overwrite"]) == (recipe("lenet", epochs=12),
                                                                                    tmp_path / "d", True, False)


def test_loading_a_run_takes_the_device_asked_for() -> None:
    from convzoo.pretrained import pretrained_dir

    for load in (lambda: api.load(pretrained_dir("lenet"), device="nope"), lambda: api.load_pretrained("lenet", "nope"),
                 lambda: api.Run.open(pretrained_dir("lenet"), "nope")):
        with pytest.raises(ConfigError, match=r"^device must be auto, cpu, cuda, cuda:N or mps, got 'nope'$"):
            load()
    assert api.load(pretrained_dir("lenet"), "cpu").run_dir == pretrained_dir("lenet")


def test_train_without_a_model_says_what_to_give_in_python() -> None:
    with pytest.raises(ConfigError) as error:
        api.train(out="runs/x")
    assert (str(error.value), error.value.field) == ("train needs a model (see convzoo.models.list_models()), or "
                                                     "resume=True and out", "model")
