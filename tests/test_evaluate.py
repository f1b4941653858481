"""Scoring a model: accuracy, loss, confusion, predictions, test-time augmentation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from convzoo.config import recipe


def test_tta_scores_an_image_and_its_mirror_image() -> None:
    from convzoo.data import Batches
    from convzoo.evaluate import evaluate, scores
    from convzoo.models import create_model

    assert recipe("resnet18", "fast").tta and not recipe("lenet_modern", "fast").tta and not recipe("lenet").tta
    torch.manual_seed(0)
    model = create_model("lenet").eval()
    images, labels = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (50,))
    batches = Batches(images, labels, 20)
    x = torch.cat([x for x, _ in batches])
    with torch.no_grad():
        mean = (model(x) + model(x.flip(-1))) / 2
        torch.testing.assert_close(scores(model, x, tta=True), mean)
    result = evaluate(model, batches, tta=True)
    assert torch.equal(result.predictions, mean.argmax(1))
    assert result.loss == pytest.approx(float(torch.nn.functional.cross_entropy(mean, labels)), rel=1e-5)


class _Fixed(torch.nn.Module):
    """A stand-in network whose logits for image i are row i of ``logits`` (the image's first pixel is i)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[(x[:, 0, 0, 0] * 255).round().long()]


def test_each_images_loss_and_confidence_and_the_mistakes_by_loss() -> None:
    import math

    from convzoo.data import Batches
    from convzoo.evaluate import evaluate

    # 4 images, 3 classes: image 0 right and sure, 1 wrong and sure, 2 wrong and unsure, 3 right and unsure.
    logits = torch.tensor([[5.0, 0, 0], [0, 6.0, 0], [0, 0.5, 0], [0, 0, 0.2]])
    labels = torch.tensor([0, 2, 0, 2])
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1).expand(4, 3, 3).contiguous()
    evaluation = evaluate(_Fixed(logits), Batches(images, labels, 3))
    expected_loss = [-math.log(math.exp(row[label]) / sum(math.exp(v) for v in row))
                     for row, label in zip(logits.tolist(), labels.tolist())]
    assert evaluation.losses.tolist() == pytest.approx(expected_loss, rel=1e-5)
    assert evaluation.confidences.tolist() == pytest.approx(logits.softmax(1).max(1).values.tolist(), rel=1e-6)
    assert evaluation.labels.tolist() == [0, 2, 0, 2] and evaluation.predictions.tolist() == [0, 1, 1, 2]
    assert evaluation.top_losses() == [1, 2]  # the mistakes, surest first
    assert evaluation.top_losses(1) == [1]
    assert evaluation.top_losses(mistakes_only=False) == [1, 2, 3, 0]
    assert evaluation.most_confused() == [(0, 1, 1), (2, 1, 1)]


# --- a hand-computed case: the numbers `eval` and the report show ----------------------------------

class _LogitsPerImage(torch.nn.Module):
    """A stub network: image i (every pixel i / 255) gets the logits ``table[i]``."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x[:, 0, 0, 0] * 255).round().long()
        return self.table[index]


def _one_hot_logit(label: int, value: float) -> list[float]:
    return [value if k == label else 0.0 for k in range(10)]


# (true label, predicted label, logit of the prediction; every other logit 0), one row per image.
HAND = [(0, 0, 2.0), (0, 1, 1.0), (1, 1, 3.0), (2, 0, 0.5), (2, 2, 4.0), (2, 2, 1.5)]


def test_confusion_per_class_accuracy_and_loss_on_a_hand_computed_case() -> None:
    from convzoo.data import Batches
    from convzoo.evaluate import evaluate

    images = torch.stack([torch.full((28, 28), i, dtype=torch.uint8) for i in range(len(HAND))])
    labels = torch.tensor([true for true, _, _ in HAND])
    model = _LogitsPerImage([_one_hot_logit(pred, value) for _, pred, value in HAND])
    result = evaluate(model, Batches(images, labels, 4), amp=False, tta=False)  # two batches: 4 and 2 images

    # Rows are the true class, columns the predicted one (the docstring's orientation).
    expected = [[0] * 10 for _ in range(10)]
    expected[0][0], expected[0][1], expected[1][1], expected[2][0], expected[2][2] = 1, 1, 1, 1, 2
    assert result.confusion.tolist() == expected
    assert result.confusion[0, 1] == 1 and result.confusion[1, 0] == 0  # a transposed matrix fails here
    per_class = result.per_class_accuracy
    assert per_class[:3] == [pytest.approx(1 / 2), pytest.approx(1.0), pytest.approx(2 / 3)]
    assert all(math.isnan(a) for a in per_class[3:])  # no test image of those classes
    assert result.accuracy == pytest.approx(4 / 6) and result.count == 6
    assert result.predictions.tolist() == [pred for _, pred, _ in HAND]
    # Cross-entropy by hand: log(sum of exp(logits)) - logit of the true class, averaged.
    losses = [math.log(math.exp(value) + 9) - (value if true == pred else 0.0) for true, pred, value in HAND]
    assert result.loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_evaluation_leaves_the_model_in_the_mode_it_found() -> None:
    from convzoo.data import Batches
    from convzoo.evaluate import evaluate

    model = _LogitsPerImage([_one_hot_logit(0, 1.0)])
    model.train()
    evaluate(model, Batches(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([0, 3]), 2))
    assert model.training


# --- the evaluation's views, on hand-made matrices ------------------------------------------------

def _evaluation(confusion: list[list[int]], **kwargs: object):
    import numpy as np

    from convzoo.evaluate import Evaluation

    return Evaluation(0.0, 0.0, np.array(confusion), torch.zeros(0, dtype=torch.int64), **kwargs)


def test_most_confused_counts_first_then_by_class() -> None:
    """Off the diagonal: (1, 0) 3 times; (0, 1), (1, 2), (2, 0), (3, 1), (2, 3) twice; (3, 2) once."""
    e = _evaluation([[5, 2, 0, 0], [3, 4, 2, 0], [2, 0, 1, 2], [0, 2, 1, 9]])
    assert e.most_confused() == [(1, 0, 3), (0, 1, 2), (1, 2, 2), (2, 0, 2), (2, 3, 2)]  # five by default
    assert e.most_confused(10) == [(1, 0, 3), (0, 1, 2), (1, 2, 2), (2, 0, 2), (2, 3, 2), (3, 1, 2), (3, 2, 1)]
    assert e.most_confused(1) == [(1, 0, 3)]
    assert _evaluation([[4, 0], [0, 3]]).most_confused() == []  # no mistakes: nothing confused


def test_per_class_accuracy_is_the_diagonal_over_each_row() -> None:
    e = _evaluation([[3, 1, 0], [2, 2, 4], [0, 0, 0]])
    assert e.per_class_accuracy[:2] == [0.75, 0.25] and math.isnan(e.per_class_accuracy[2])
    assert e.count == 12


def test_top_losses_order_ties_and_count() -> None:
    # losses: images 1 and 3 tie (the earlier first); image 2 is right, so left out of the mistakes
    e = _evaluation([[1]], losses=torch.tensor([0.5, 2.0, 3.0, 2.0, 0.1]), labels=torch.tensor([0, 1, 1, 1, 0]))
    e.predictions = torch.tensor([1, 0, 1, 0, 1])
    assert e.top_losses() == [1, 3, 0, 4]
    assert e.top_losses(2) == [1, 3] and e.top_losses(0) == []
    assert e.top_losses(mistakes_only=False) == [2, 1, 3, 0, 4]
    ties = _evaluation([[1]], losses=torch.ones(40), labels=torch.zeros(40, dtype=torch.int64))
    ties.predictions = torch.ones(40, dtype=torch.int64)
    assert ties.top_losses(5) == [0, 1, 2, 3, 4]  # equal losses in the images' order (a stable sort)
    for missing in ({"losses": torch.ones(5)}, {"labels": torch.ones(5)}, {}):
        with pytest.raises(ValueError, match="^this evaluation has no per-image losses$"):
            _evaluation([[1]], **missing).top_losses()


def test_the_number_of_classes_a_model_scores() -> None:
    from convzoo.evaluate import num_classes

    class Stub(torch.nn.Module):
        def __init__(self, config: object) -> None:
            super().__init__()
            self.config = config

    compiled = torch.nn.Module()
    compiled._orig_mod = Stub({"num_classes": 4})
    assert [num_classes(m) for m in (Stub({"num_classes": 3}), compiled, Stub({"depth": 3}), Stub([3]),
                                     Stub(None), torch.nn.Linear(2, 2))] == [3, 4, 10, 10, 10, 10]
    assert num_classes(Stub({"num_classes": "7"})) == 7


def test_evaluate_reports_progress_and_counts_the_classes_asked_for() -> None:
    from convzoo.data import Batches
    from convzoo.evaluate import evaluate

    images = torch.stack([torch.full((28, 28), i, dtype=torch.uint8) for i in range(5)])
    model = _LogitsPerImage([_one_hot_logit(i % 3, 2.0)[:3] for i in range(5)])
    done: list[tuple[int, int]] = []
    result = evaluate(model, Batches(images, torch.tensor([0, 1, 0, 0, 1]), 2), progress=lambda *a: done.append(a),
                      classes=3)
    assert done == [(1, 3), (2, 3), (3, 3)]
    # predicted 0, 1, 2, 0, 1 for true 0, 1, 0, 0, 1
    assert result.confusion.tolist() == [[2, 0, 1], [0, 2, 0], [0, 0, 0]] and result.accuracy == pytest.approx(4 / 5)
    assert result.predictions.dtype == torch.int64 and result.confidences.dtype == torch.float32
    assert result.losses.dtype == torch.float32 and result.labels.tolist() == [0, 1, 0, 0, 1]


class _Recorder(torch.nn.Module):
    """A stub network noting each batch's shape, layout and autocast; logits: the first row's first 10 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last),
                           torch.is_autocast_enabled("cpu")))
        return x[:, 0, 0, :10] * 10


def test_evaluate_model_scores_as_the_run_evaluated() -> None:
    from convzoo.evaluate import evaluate_model

    images = torch.arange(3 * 28, dtype=torch.uint8).view(1, 3, 1, 28).expand(5, 3, 28, 28).contiguous()
    labels = torch.tensor([0, 1, 2, 3, 4])
    model, done = _Recorder(), []
    config = recipe("lenet", device="cpu", eval_batch_size=2, input_size=32, channels_last=True, amp=True, tta=True)
    result = evaluate_model(config, model, images, labels, torch.device("cpu"), progress=lambda *a: done.append(a),
                            classes=12)
    assert model.calls == [((2, 3, 32, 32), True, True)] * 4 + [((1, 3, 32, 32), True, True)] * 2  # TTA: two each
    assert done == [(1, 3), (2, 3), (3, 3)] and result.confusion.shape == (12, 12)
    model = _Recorder()
    evaluate_model(recipe("lenet", device="cpu", channels_last=False), model, images, labels, torch.device("cpu"))
    assert model.calls == [((5, 3, 28, 28), False, False)]


def test_scores_under_autocast() -> None:
    from convzoo.evaluate import scores

    model, x = _Recorder(), torch.rand(2, 1, 28, 28)
    logits = scores(model, x, amp=True)
    assert model.calls == [((2, 1, 28, 28), True, True)] and logits.dtype == torch.float32
    torch.testing.assert_close(logits, x[:, 0, 0, :10] * 10)


# --- the splits a run uses --------------------------------------------------------------------------

def _numbered(n: int, rule: str) -> object:
    """A DataSet whose image i (train) and 100 + i (test) carry their number as every pixel."""
    from convzoo.data import DataSet

    ids = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 2, 2)
    return DataSet("numbered", ("a", "b"), ids, torch.arange(n) % 2, ids + 100, torch.arange(n) % 2, {"rule": rule})


def test_limits_take_the_first_images_of_a_published_set_and_a_seeded_draw_of_a_folder() -> None:
    from convzoo.evaluate import splits

    config = recipe("lenet", device="cpu", limit_train=4, limit_test=3, seed=5)
    train, train_labels, test, test_labels = splits(config, _numbered(10, "official"))
    assert train[:, 0, 0, 0].tolist() == [0, 1, 2, 3] and test[:, 0, 0, 0].tolist() == [100, 101, 102]
    assert train_labels.tolist() == [0, 1, 0, 1] and test_labels.tolist() == [0, 1, 0]
    train, train_labels, test, test_labels = splits(config, _numbered(10, "folders"))
    drawn = torch.randperm(10, generator=torch.Generator().manual_seed(5))[:4].sort().values.tolist()
    drawn_test = torch.randperm(10, generator=torch.Generator().manual_seed(6))[:3].sort().values.tolist()
    assert drawn != drawn_test  # the test split is drawn with the next seed
    assert train[:, 0, 0, 0].tolist() == drawn and train_labels.tolist() == [i % 2 for i in drawn]
    assert test[:, 0, 0, 0].tolist() == [100 + i for i in drawn_test] and test_labels.tolist() == [
        i % 2 for i in drawn_test]
    whole = splits(recipe("lenet", device="cpu", limit_train=10, limit_test=None), _numbered(10, "folders"))
    assert whole[0][:, 0, 0, 0].tolist() == list(range(10)) and len(whole[2]) == 10


def test_the_validation_split_holds_out_a_share_of_each_class() -> None:
    """Class 0 has 4 images: 2 held out; class 1 has 3: round(1.5) = 2, at most 3 - 1 = 2; class 2 has 2: 1;
    class 3 has 1: none (one is left for training)."""
    from convzoo.data import stratified_split
    from convzoo.evaluate import validation_split

    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 1, 0, 3])
    images = torch.arange(10, dtype=torch.uint8)[:, None, None, None]
    config = recipe("lenet", device="cpu", val_fraction=0.5, seed=3)
    train, train_labels, val, val_labels = validation_split(config, images, labels)
    assert sorted(val_labels.tolist()) == [0, 0, 1, 1, 2]
    assert torch.equal(train_labels, labels[train[:, 0, 0, 0].long()])
    assert torch.equal(val_labels, labels[val[:, 0, 0, 0].long()])
    held = stratified_split(labels.numpy(), 0.5, 3 + 2).nonzero()[0].tolist()  # drawn with the seed + 2
    assert val[:, 0, 0, 0].tolist() == held and train[:, 0, 0, 0].tolist() == [i for i in range(10) if i not in held]
    assert all(stratified_split(labels.numpy(), 0.5, seed).nonzero()[0].tolist() != held for seed in (3, 4, 6, 1))
    none = validation_split(recipe("lenet", device="cpu", val_fraction=0.0), images, labels)
    assert len(none[0]) == 10 and len(none[2]) == 0


def test_test_split_of_a_gray_and_a_colour_set() -> None:
    from convzoo.data import DataSet
    from convzoo.evaluate import test_split

    config = recipe("lenet", device="cpu", limit_test=2)
    images, labels = test_split(config, data=_numbered(5, "official"))
    assert images.shape == (2, 2, 2) and images[:, 0, 0].tolist() == [100, 101] and labels.tolist() == [0, 1]
    colour = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    zeros = torch.zeros(3, dtype=torch.int64)
    data = DataSet("colour", ("a",), colour, zeros, colour, zeros, {"rule": "official"})
    assert test_split(config, data=data)[0].shape == (2, 3, 4, 4)


def test_run_data_reads_the_runs_data_where_it_is_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from convzoo.evaluate import run_data, test_split

    slice_dir = str(Path(__file__).parent / "data" / "fashion-mnist-slice")
    data = run_data(recipe("lenet", device="cpu", data_dir=slice_dir))
    assert (data.name, len(data.train_labels), len(data.test_labels), data.size) == ("fashion-mnist", 2000, 1000, 28)
    images, labels = test_split(recipe("lenet", device="cpu", limit_test=3), slice_dir)
    assert images.shape == (3, 28, 28) and torch.equal(images, data.test_images[:3, 0])
    # a folder of images, moved since the run: 6 + 5 images of two classes, 5.png the same pixels as 0.png
    folder = tmp_path / "moved"
    for c, colour in enumerate(((255, 0, 0), (0, 0, 255))):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (6 + i % 2, 6), (colour[0], 10 * i, colour[2])).save(folder / f"class{c}" / f"{i}.png")
    Image.new("RGB", (6, 6), (255, 0, 0)).save(folder / "class0" / "5.png")
    config = recipe("lenet", device="cpu", data=str(tmp_path / "was-here"), data_dir=str(folder), grayscale=True,
                    data_size=4, test_fraction=0.4, seed=3)
    notes: list[str] = []
    data = run_data(config, warn=notes.append)
    # round(0.4 * 6) = 2 and round(0.4 * 5) = 2 held out for testing; gray, 4x4
    assert data.channels == 1 and data.size == 4 and data.test_labels.tolist() == [0, 0, 1, 1]
    assert data.split == {"rule": "stratified", "test_fraction": 0.4, "seed": 3}
    duplicate = ("1 test images are also in the training split (same pixels), e.g. class0/0.png: the test accuracy "
                 "will flatter the model")
    assert notes == [duplicate] and capsys.readouterr().err == ""
    run_data(config)  # warnings to stderr by default
    assert capsys.readouterr().err == f"warning: {duplicate}\n"
    assert test_split(config)[0].shape == (4, 4, 4) and capsys.readouterr().err == ""  # test_split: silent
    config = recipe("lenet", device="cpu", data=str(tmp_path / "was-here"), seed=3, test_fraction=0.4)
    images, labels = test_split(config, str(folder))  # the folder where it is now, given to test_split
    assert images.shape == (4, 3, 6, 6) and labels.tolist() == [0, 0, 1, 1] and capsys.readouterr().err == ""
    other = run_data(recipe("lenet", device="cpu", data=str(folder), test_fraction=0.2), data_dir=None)
    assert (other.channels, other.size, len(other.test_labels)) == (3, 6, 1 + 1)  # as given: colour, the common size
