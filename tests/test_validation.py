"""The validation split (``--val-fraction``, issue 27): held out of the training set, scored each epoch; the test set
scored once, at the end; both shown, and every reader of a run's epochs takes either."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (the first fit imports it, ~10 s: paid once, at collection)

from convzoo.checkpoint import epoch_score, is_history_row
from convzoo.config import TrainConfig, recipe
from convzoo.data import load_split
from convzoo.errors import ConfigError, RunFileError
from convzoo.evaluate import validation_split
from convzoo.monitor import finished_at_chance, not_learning
from convzoo.report import write_report as REAL_WRITE_REPORT
from convzoo.run import Run
from convzoo.rundir import read_metrics
from convzoo.train import fit

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


def _config(**changes: object) -> TrainConfig:
    settings = dict(optimizer="adamw", lr=0.005, batch_size=32, epochs=2, limit_train=300, limit_test=150,
                    eval_batch_size=64, val_fraction=0.2, data_dir=str(SLICE), device="cpu")
    return recipe("lenet", **{**settings, **changes})


pytestmark = pytest.mark.usefixtures("reports")  # the reports recorded, not drawn (conftest.py)


@pytest.fixture(scope="module")
def val_run(tmp_path_factory: pytest.TempPathFactory, reports: list) -> dict:
    """Two epochs of LeNet on 300 training images, a fifth of each class held out; what each evaluation scored, the
    images each training batch held, the log."""
    from convzoo import train
    from convzoo.step import TrainStep

    seen: dict = {"scored": [], "trained": [], "log": []}
    evaluate, step_call = train.evaluate, TrainStep.__call__

    def record_evaluation(model, batches, *args, **kwargs):
        seen["scored"].append(torch.cat([y for _, y in batches]))
        return evaluate(model, batches, *args, **kwargs)

    def record_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        seen["trained"].append(x.clone())
        step_call(self, x, y)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "evaluate", record_evaluation)
        mp.setattr(TrainStep, "__call__", record_step)
        out = tmp_path_factory.mktemp("val") / "run"
        seen["run"] = fit(_config(), out, log=seen["log"].append, progress=False)
    seen["out"], seen["report"] = out, reports[-1]
    return seen


def test_a_fifth_of_each_class_is_held_out_and_never_trained_on() -> None:
    config = _config()
    images, labels = load_split("train", SLICE)
    images, labels = images[:300, None], labels[:300]
    train_x, train_y, val_x, val_y = validation_split(config, images, labels)
    counts, held = Counter(labels.tolist()), Counter(val_y.tolist())
    assert held == {c: int(n * 0.2 + 0.5) for c, n in counts.items()}  # round(0.2 n) of each class
    assert len(train_y) + len(val_y) == 300 and Counter(train_y.tolist()) == counts - held
    rows = {bytes(x.numpy()) for x in images}
    assert len(rows) == 300  # the slice's images are distinct: the split can be checked image by image
    assert not {bytes(x.numpy()) for x in train_x} & {bytes(x.numpy()) for x in val_x}
    # The same seed holds the same images out; another seed others.
    assert torch.equal(validation_split(config, images, labels)[3], val_y)
    assert not torch.equal(validation_split(_config(seed=1), images, labels)[2], val_x)


def test_each_epoch_is_scored_on_the_validation_split_and_the_test_set_once(val_run: dict) -> None:
    held = validation_split(_config(), *(t[:300] for t in load_split("train", SLICE)))[3]
    test_labels = load_split("test", SLICE)[1][:150]
    scored = val_run["scored"]
    assert len(scored) == 3  # epoch 1, epoch 2 on the validation split; then the test set
    assert torch.equal(scored[0], held) and torch.equal(scored[1], held) and torch.equal(scored[2], test_labels)
    trained = sum(len(x) for x in val_run["trained"])
    assert trained == 2 * (300 - len(held))  # two epochs of the images left for training


def test_the_rows_hold_the_validation_accuracy_and_the_result_both(val_run: dict) -> None:
    out, run = val_run["out"], val_run["run"]
    rows = read_metrics(out)
    assert all("val_acc" in row and "test_acc" not in row for row in rows)
    result = json.loads((out / "result.json").read_text())
    assert result["val_acc"] == rows[-1]["val_acc"] == run.val_acc
    assert result["test_acc"] == pytest.approx(run.test_acc) and result["test_images"] == 150
    reopened = Run.open(out, "cpu")
    assert reopened.test_acc == result["test_acc"] and reopened.val_acc == rows[-1]["val_acc"]
    assert reopened.evaluate(progress=False).accuracy == pytest.approx(result["test_acc"])
    epoch_line = next(line for line in val_run["log"] if line.startswith("epoch"))
    assert "val acc" in epoch_line and "test acc" not in epoch_line
    assert val_run["log"][-1].startswith(f"the test set, scored once: accuracy {result['test_acc']:.4f} on 150 images")


def test_the_report_shows_both(val_run: dict) -> None:
    evaluated, pictures = val_run["report"]
    assert pictures and evaluated.run is val_run["run"]
    page = REAL_WRITE_REPORT(evaluated).read_text()
    assert "validation accuracy (last epoch)" in page and f"{val_run['run'].val_acc:.4f}" in page
    assert "<th>val_acc</th>" in page.replace(" class=l", "") or "val_acc" in page


def test_train_prints_both_and_json_carries_both(tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    args = ["train", "lenet", "--epochs", "1", "--limit-train", "200", "--limit-test", "100", "--val-fraction",
            "0.25", "--data-dir", str(SLICE), "--device", "cpu", "--out", str(tmp_path / "r")]
    code, out, _ = run_cli(*args)
    assert code == 0
    assert "val acc" in out and "(validation accuracy " in out and "the test set, scored once" in out
    code, out, _ = run_cli(*args[:-1], str(tmp_path / "j"), "--json")
    assert code == 0 and {"test_acc", "val_acc"} <= set(json.loads(out.splitlines()[-1]))


def test_a_resumed_run_keeps_its_validation_split(tmp_path: Path) -> None:
    config = _config(epochs=1)
    fit(config, tmp_path / "r", log=lambda _: None, progress=False)
    whole = fit(_config(epochs=2), tmp_path / "whole", log=lambda _: None, progress=False)
    resumed = fit(_config(epochs=2), tmp_path / "r", resume=True, log=lambda _: None, progress=False)
    assert [row["val_acc"] for row in resumed.history] == [row["val_acc"] for row in whole.history]
    assert resumed.test_acc == whole.test_acc


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_a_fraction_outside_0_to_1_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="val-fraction must be at least 0 and below 1"):
        _config(val_fraction=value).validate()


def test_a_fraction_that_holds_out_nothing_is_refused(tmp_path: Path,
                                                     run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = run_cli("train", "lenet", "--limit-train", "20", "--val-fraction", "0.01", "--data-dir", str(SLICE),
                           "--device", "cpu", "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip().startswith("error: --val-fraction 0.01 holds out no image of the 20 training")
    assert not (tmp_path / "r").exists()


def test_the_dry_run_counts_the_split(tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = run_cli("train", "lenet", "--limit-train", "300", "--limit-test", "150", "--val-fraction", "0.2",
                           "--data-dir", str(SLICE), "--device", "cpu", "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["val_images"] == 60 and plan["train_images"] == 240 and plan["test_images"] == 150


# --- every reader of a run's epochs takes either accuracy ------------------------------------------------------

def _row(**score: float) -> dict:
    return {"epoch": 1, "train_loss": 2.3, "train_acc": 0.1, "seconds": 1.0, "eval_seconds": 0.1, **score}


def test_a_row_is_scored_on_exactly_one_split() -> None:
    assert epoch_score(_row(test_acc=0.5)) == ("test", 0.5)
    assert epoch_score(_row(val_acc=0.25)) == ("validation", 0.25)
    assert is_history_row(_row(test_acc=0.5)) and is_history_row(_row(val_acc=0.5))
    assert not is_history_row(_row()) and not is_history_row(_row(test_acc=0.5, val_acc=0.5))
    assert not is_history_row(_row(val_acc=True)) and not is_history_row([1])


@pytest.mark.parametrize("score", [{}, {"test_acc": 0.5, "val_acc": 0.5}, {"val_acc": "0.5"}])
def test_metrics_without_exactly_one_accuracy_are_refused(score: dict, tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps(_row(**score)) + "\n")
    with pytest.raises(RunFileError, match="no number for test_acc or val_acc"):
        read_metrics(tmp_path)


def test_the_warnings_name_the_split_they_watched() -> None:
    config = recipe("lenet")
    history = [{**_row(val_acc=0.1), "epoch": e} for e in (1, 2)]
    assert "validation accuracy has stayed at chance" in not_learning(history, config)
    assert "finished at chance: validation accuracy 0.1000" in finished_at_chance(history, config)
    history = [{**_row(test_acc=0.1), "epoch": e} for e in (1, 2)]
    assert "test accuracy has stayed at chance" in not_learning(history, config)


def test_the_curves_name_the_split(tmp_path: Path) -> None:
    from convzoo.figures import curves_figure, runs_figure

    def labels(fig) -> set[str]:
        return {t.get_text() for ax in fig.axes for t in ax.texts + [ax.title] + list(
            ax.get_legend().get_texts() if ax.get_legend() else [])}

    assert "val acc" in labels(curves_figure([_row(val_acc=0.5)]))
    assert "test acc" in labels(curves_figure([_row(test_acc=0.5)]))
    assert "validation accuracy" in labels(runs_figure({"a": [_row(val_acc=0.5)]}))
    assert "test or validation accuracy" in labels(runs_figure({"a": [_row(val_acc=0.5)], "b": [_row(test_acc=0.5)]}))
