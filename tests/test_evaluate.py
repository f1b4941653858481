"""Scoring a model: accuracy, loss, confusion, predictions, test-time augmentation."""

from __future__ import annotations

import math

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
