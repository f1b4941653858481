"""The memory a run needs, estimated on the meta device, and refused before any work when it cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convzoo.config import recipe
from convzoo.errors import ConfigError
from convzoo.resources import GIB, available_memory, check_fits, estimate_memory

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
CPU = torch.device("cpu")


def test_the_estimate_counts_weights_data_and_activations() -> None:
    config = recipe("lenet")
    estimate = estimate_memory(config)
    assert estimate.weights == 4 * 61_706 * 2  # weights and gradients; plain SGD keeps no state
    assert estimate.data == 70_000 * (28 * 28 + 8)
    # LeNet's layer outputs per image: 6x28x28 twice, 6x14x14, 16x10x10 twice, 16x5x5, 400, 120 x2, 84 x2, 10
    outputs = 2 * 4704 + 1176 + 2 * 1600 + 400 + 400 + 2 * 120 + 2 * 84 + 10
    assert estimate.per_train_image == 4 * (784 + outputs)
    assert estimate_memory(recipe("lenet", amp=True)).per_train_image == 2 * (784 + outputs)
    momentum = estimate_memory(recipe("lenet", momentum=0.9))
    assert momentum.weights == 4 * 61_706 * 3
    assert estimate_memory(recipe("lenet", limit_train=100, limit_test=10)).data == 110 * (784 + 8)


def test_the_estimate_counts_the_run_s_own_data_colour_and_classes() -> None:
    """A folder of 3 x 32 x 32 colour images in 5 classes (500 + 100 images): its bytes, LeNet's first layer on 3
    channels and its last on 5 classes, and the 3-channel input an image keeps for the backward pass."""
    from convzoo.data import DataSet

    data = DataSet("colour", tuple("abcde"), torch.zeros(500, 3, 32, 32, dtype=torch.uint8),
                   torch.zeros(500, dtype=torch.int64), torch.zeros(100, 3, 32, 32, dtype=torch.uint8),
                   torch.zeros(100, dtype=torch.int64))
    estimate = estimate_memory(recipe("lenet"), data)
    assert estimate.data == 600 * (3 * 32 * 32 + 8)
    # LeNet's parameters on 3 channels and 5 classes: the first conv has 6*3*25+6, the last layer 84*5+5
    assert estimate.weights == 4 * 2 * (61_706 + 6 * 2 * 25 - 5 * 84 - 5)
    plain = estimate_memory(recipe("lenet"))
    assert estimate.per_train_image - plain.per_train_image == 4 * (2 * 784 - 5)  # 2 more input planes, 5 fewer logits
    assert estimate_memory(recipe("lenet", limit_train=50, limit_test=500), data).data == 150 * (3 * 32 * 32 + 8)


def test_activations_grow_with_the_square_of_the_input_side() -> None:
    small = estimate_memory(recipe("alexnet", resize=96)).per_train_image
    large = estimate_memory(recipe("alexnet", resize=192)).per_train_image
    assert 3.5 < large / small < 4.5


def test_a_batch_that_cannot_fit_names_the_flag_and_the_largest_that_does() -> None:
    config = recipe("alexnet", eval_batch_size=16)  # 224x224, batch 128
    estimate = estimate_memory(config)
    need = estimate.total(config.batch_size, config.eval_batch_size)
    with pytest.raises(ConfigError, match=r"--batch-size 128 needs about .* GiB .* the largest batch size that "
                                          r"fits is about (\d+)") as info:
        check_fits(config, CPU, available=need // 2)
    largest = int(str(info.value).rsplit("about ", 1)[1])
    assert 0 < largest < 128
    check_fits(recipe("alexnet", batch_size=largest, eval_batch_size=16), CPU, available=need // 2)  # it fits


def test_an_input_too_large_for_even_one_image_names_resize() -> None:
    with pytest.raises(ConfigError, match="not enough even for one image at a time: use a smaller --input-size"):
        check_fits(recipe("alexnet", resize=4096), CPU, available=2 * GIB)


def test_the_evaluation_batch_is_checked_too() -> None:
    config = recipe("lenet", eval_batch_size=10 ** 8)
    with pytest.raises(ConfigError, match="--eval-batch-size 100000000"):
        check_fits(config, CPU, available=4 * GIB)


def test_this_machine_reports_its_free_memory() -> None:
    free = available_memory(CPU)
    assert free is not None and free > 0


def test_the_command_line_refuses_before_creating_anything(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "alexnet", "--batch-size", "100000000", "--limit-train", "64", "--limit-test",
                           "32", "--data-dir", str(SLICE), "--device", "cpu", "--out", str(out))
    assert code == 2 and "the largest batch size that fits is about" in err, err
    assert not out.exists()


def test_batch_norm_with_one_image_per_batch_is_refused(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "lenet_bn", "--limit-train", "1", "--limit-test", "8", "--data-dir", str(SLICE),
                           "--device", "cpu", "--out", str(out))
    assert code == 2 and "--limit-train 1: lenet_bn uses batch norm" in err, err
    assert not out.exists()
    code, _, err = run_cli("train", "lenet_bn", "--batch-size", "1", "--limit-train", "8", "--limit-test", "8",
                           "--data-dir", str(SLICE), "--device", "cpu", "--out", str(out))
    assert code == 2 and "--batch-size 1: lenet_bn uses batch norm" in err, err
