"""convzoo.data.batches: ``to_input`` and ``Batches``, the in-memory batcher (order, augmentation, shards)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from convzoo.data.batches import Batches, to_input
from convzoo.data.source import load_split

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


# ---------------------------------------------------------------------------------------------
# Batches and to_input


@pytest.fixture(scope="module")
def small() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_split("test", SLICE)
    return images[:100], labels[:100]


def collect(batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_to_input_shapes_and_scale(small):
    images = small[0][:5]
    x = to_input(images, None)
    assert x.dtype == torch.float32 and x.shape == (5, 1, 28, 28)
    assert torch.equal(x, images.unsqueeze(1).float() / 255)
    assert torch.equal(to_input(images.unsqueeze(1), 28), x)
    big = to_input(images, 96)
    assert big.shape == (5, 1, 96, 96) and 0 <= big.min() and big.max() <= 1
    expected = torch.nn.functional.interpolate(x, size=96, mode="bilinear", align_corners=False, antialias=False)
    assert torch.equal(big, expected)
    with pytest.raises(ValueError, match="uint8"):
        to_input(x, None)


def test_batches_shapes_and_coverage(small):
    images, labels = small
    batches = Batches(images, labels, 32, shuffle=True, seed=1)
    assert len(batches) == 4 and batches.num_examples == 100
    sizes = []
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
        assert 0 <= x.min() and x.max() <= 1
        sizes.append(len(x))
    assert sizes == [32, 32, 32, 4]
    x, y = collect(batches)
    # Every example exactly once: match each output row to its source by pixels.
    flat = images.flatten(1).float() / 255
    source = torch.cdist(x.flatten(1), flat).argmin(1)
    assert sorted(source.tolist()) == list(range(100))
    assert torch.equal(y, labels[source])
    assert source.tolist() != list(range(100))


def test_batches_order_reproducible_per_epoch(small):
    def order(seed, epoch):
        batches = Batches(*small, 25, shuffle=True, seed=seed)
        batches.set_epoch(epoch)
        return collect(batches)[0]

    assert torch.equal(order(0, 0), order(0, 0))
    assert not torch.equal(order(0, 0), order(0, 1))
    assert not torch.equal(order(0, 0), order(1, 0))
    assert torch.equal(order(0, 1), order(1, 0))  # the generator is seeded with seed + epoch


def test_batches_no_shuffle_keeps_order(small):
    x, y = collect(Batches(*small, 30))
    assert torch.equal(x, to_input(small[0], None)) and torch.equal(y, small[1])


def test_batches_resize(small):
    x, _ = next(iter(Batches(*small, 8, resize=96)))
    assert x.shape == (8, 1, 96, 96)
    assert torch.equal(x, to_input(small[0][:8], 96))


@pytest.mark.parametrize("resize, augment", [(None, False), (64, False), (None, True), (48, True)])
def test_batches_channels_last_are_the_same_pixels_in_nhwc_strides(small, resize, augment):
    common = dict(shuffle=True, seed=2, resize=resize, augment=augment)
    for (x, y), (x_cl, y_cl) in zip(Batches(*small, 32, **common), Batches(*small, 32, channels_last=True, **common),
                                    strict=True):
        assert torch.equal(x, x_cl) and torch.equal(y, y_cl)
        assert x_cl.stride(1) == 1 and x_cl.is_contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(1, 4, 3).to(memory_format=torch.channels_last)
        assert conv(x_cl).is_contiguous(memory_format=torch.channels_last)


def test_batches_drop_last(small):
    assert len(Batches(*small, 32, drop_last=True)) == 3
    assert [len(x) for x, _ in Batches(*small, 32, drop_last=True)] == [32, 32, 32]
    assert len(Batches(*small, 50, drop_last=True)) == 2


def test_batches_augment(small):
    images, labels = small
    batches = Batches(images, labels, 40, augment=True, seed=3)
    x, y = collect(batches)
    assert x.shape == (100, 1, 28, 28) and torch.equal(y, labels)
    assert torch.equal(x, collect(Batches(images, labels, 40, augment=True, seed=3))[0])
    batches.set_epoch(1)
    assert not torch.equal(x, collect(batches)[0])
    # Each output is its own image, possibly flipped, shifted by at most 2 pixels with zeros filled in.
    padded = torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2))
    flipped = unchanged = 0
    for i in range(100):
        candidates = {
            (f, dy, dx): (padded[i].flip(-1) if f else padded[i])[dy : dy + 28, dx : dx + 28]
            for f in (0, 1) for dy in range(5) for dx in range(5)
        }
        matches = [k for k, c in candidates.items() if torch.equal(c, x[i, 0])]
        assert matches, f"augmented image {i} is no flip/crop of its source"
        flipped += all(k[0] for k in matches)
        unchanged += (0, 2, 2) in matches
    assert 20 < flipped < 80 and unchanged < 30


def test_batches_distributed_shards_partition_global_batches(small):
    images, labels = small
    options = dict(shuffle=True, seed=5, augment=True)
    whole = list(Batches(images, labels, 32, **options))
    shards = [list(Batches(images, labels, 32, **options, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(whole) == 4
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shards, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert [len(x) for x, _ in shards[0]] == [16, 16, 16, 2]


def test_batches_distributed_last_batch_rules(small):
    images, labels = small
    # 100 = 3 * 33 + 1: a last batch of one row cannot be split over 3 ranks, so it is dropped.
    per_rank = [list(Batches(images, labels, 33, rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in per_rank] == [3, 3, 3]
    assert sum(len(x) for p in per_rank for x, _ in p) == 99
    # 100 = 2 * 48 + 4: the last 4 rows are split 1, 1, 2.
    per_rank = [list(Batches(images, labels, 48, rank=r, world_size=3)) for r in range(3)]
    assert [[len(x) for x, _ in p] for p in per_rank] == [[16, 16, 1], [16, 16, 1], [16, 16, 2]]
    with pytest.raises(ValueError, match="divisible by world_size"):
        Batches(images, labels, 33, world_size=2)


def test_batches_validates_arguments(small):
    images, labels = small
    with pytest.raises(ValueError, match="uint8"):
        Batches(images.float(), labels, 4)
    with pytest.raises(ValueError, match="labels must have shape"):
        Batches(images, labels[:5], 4)
    with pytest.raises(ValueError, match="rank"):
        Batches(images, labels, 4, rank=2, world_size=2)


def test_batch_norm_drops_a_last_batch_of_one() -> None:
    """``min_last=2`` (a batch-norm model) drops a last partial batch with fewer than 2 images per process."""
    images, labels = torch.zeros(40, 28, 28, dtype=torch.uint8), torch.zeros(40, dtype=torch.int64)
    assert len(Batches(images[:33], labels[:33], 32)) == 2  # the book's loader keeps the last image
    assert [len(y) for _, y in Batches(images[:33], labels[:33], 32, min_last=2)] == [32]
    shards = [Batches(images[:36], labels[:36], 32, min_last=2, rank=r, world_size=2) for r in range(2)]
    assert [len(b) for b in shards] == [2, 2]  # 4 left over: 2 per process, kept
    shards = [Batches(images[:35], labels[:35], 32, min_last=2, rank=r, world_size=2) for r in range(2)]
    assert [len(b) for b in shards] == [1, 1]  # 3 left over: one process would get 1, dropped on both
