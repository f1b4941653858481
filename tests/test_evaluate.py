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
