"""Scoring a model: accuracy, loss, confusion, predictions, test-time augmentation."""

from __future__ import annotations

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
