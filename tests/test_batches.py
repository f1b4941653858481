"""convzoo.data.batches: ``to_input`` and ``Batches``, the in-memory batcher (order, augmentation, shards)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

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


# ---------------------------------------------------------------------------------------------
# Pinned: the order and augmentation of every epoch, argument checks, the device


def test_to_input_rejects_other_shapes():
    for shape in [(2, 2, 28, 28), (2, 4, 28, 28), (28, 28), (1, 1, 1, 28, 28)]:
        with pytest.raises(ValueError) as e:
            to_input(torch.zeros(shape, dtype=torch.uint8))
        assert str(e.value) == f"to_input expects (B, H, W) or (B, C, H, W) with C 1 or 3, got {shape}"


def test_to_input_resize_to_the_image_side_does_not_resample(small, monkeypatch):
    def no_resampling(*args, **kwargs):
        raise AssertionError("resampled an image already of the size asked for")

    monkeypatch.setattr(torch.nn.functional, "interpolate", no_resampling)
    assert torch.equal(to_input(small[0][:3], 28), small[0][:3].unsqueeze(1) / 255)


def order_of(batches: Batches) -> list[int]:
    """The example of each position, read from labels that are the examples' indices."""
    return torch.cat([y for _, y in batches]).tolist()


def test_batches_order_is_the_permutation_of_seed_plus_epoch():
    """Each epoch's order is ``torch.randperm`` from a generator seeded with ``seed + epoch``; seed 0 by default."""
    n = 100
    images, ids = torch.zeros(n, 2, 2, dtype=torch.uint8), torch.arange(n)

    def permutation(seed):
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()

    assert order_of(Batches(images, ids, 32)) == list(range(n))  # no shuffle: the file's order, every epoch
    batches = Batches(images, ids, 32, shuffle=True)
    orders = []
    for epoch in range(3):
        batches.set_epoch(epoch)
        orders.append(order_of(batches))
        assert orders[-1] == permutation(epoch) and order_of(batches) == orders[-1]  # a second pass: the same
    assert len({tuple(o) for o in orders}) == 3  # a new order each epoch
    other_seed = Batches(images, ids, 32, shuffle=True, seed=7)
    assert order_of(other_seed) == permutation(7) != orders[0]
    other_seed.set_epoch(2)
    assert order_of(other_seed) == permutation(9)


# A seed whose draw for position 134 (of 2048) is exactly 0.5, found by search: a draw flips its
# image when below 1/2, so that draw must not (the flip probability is 1/2 exactly, not 1/2 + 2**-24).
SEED_WITH_A_HALF = 11843


def reference_augmentation(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented draws (permutation, then per position a flip with probability 1/2 and a row and
    column offset in 0..4 of the crop from the 2-pixel zero padding) applied by slicing, one image at a time."""
    n, h, w = images.shape
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    draws = torch.rand(n, generator=generator)
    flip = draws < 0.5
    shift = torch.randint(0, 5, (n, 2), generator=generator)
    out = torch.empty(n, h, w, dtype=torch.uint8)
    for p, i in enumerate(order.tolist()):
        image = images[i].flip(-1) if flip[p] else images[i]
        dy, dx = shift[p].tolist()
        out[p] = torch.nn.functional.pad(image, (2, 2, 2, 2))[dy : dy + h, dx : dx + w]
    assert seed != SEED_WITH_A_HALF or draws[134] == 0.5
    return order, out


def test_batches_augmentation_is_the_generators_flips_and_crops():
    n = 2048
    images = torch.randint(0, 256, (n, 3, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(n)
    seed = SEED_WITH_A_HALF - 1
    batches = Batches(images, ids, 500, shuffle=True, augment=True, seed=seed)
    by_example = []
    for epoch in (1, 2):
        batches.set_epoch(epoch)
        order, expected = reference_augmentation(images, seed + epoch)
        x, y = collect(batches)
        assert torch.equal(y, order)
        assert torch.equal(x, expected.unsqueeze(1) / 255)
        by_example.append(x[torch.argsort(y)])
    # Each example looks different in another epoch (not only its position changes); the same seed and
    # epoch give the same images again.
    assert (by_example[0] != by_example[1]).flatten(1).any(1).float().mean() > 0.8
    again = Batches(images, ids, 500, shuffle=True, augment=True, seed=seed)
    again.set_epoch(1)
    x, y = collect(again)
    assert torch.equal(x[torch.argsort(y)], by_example[0])


def test_batches_validation_messages(small):
    images, labels = small
    for bad in (images.float(), images.view(100, 1, 28, 28).expand(100, 2, 28, 28), images[:, :, :, None]):
        with pytest.raises(ValueError) as e:
            Batches(bad, labels, 4)
        assert str(e.value) == (f"images must be uint8 (N, H, W) or (N, C, H, W) with C 1 or 3, got {bad.dtype} "
                                f"{tuple(bad.shape)}")
    with pytest.raises(ValueError, match="need batch_size >= 1 and 0 <= rank < world_size, got 0, 0, 1"):
        Batches(images, labels, 0)
    with pytest.raises(ValueError) as e:
        Batches(images, labels, 4, resize=0)
    assert str(e.value) == "resize must be a positive side length, got 0"


def test_batches_smallest_sizes(small):
    """A batch of one example and a resize to one pixel are valid."""
    images, labels = small
    assert [len(y) for _, y in Batches(images[:3], labels[:3], 1)] == [1, 1, 1]
    x, _ = next(iter(Batches(images, labels, 4, resize=1)))
    assert x.shape == (4, 1, 1, 1) and torch.equal(x, to_input(images[:4], 1))


def test_batches_take_images_with_a_channel_and_any_integer_labels(small):
    images, labels = small
    with_channel = Batches(images.unsqueeze(1), labels.to(torch.uint8), 32, shuffle=True)
    for (x, y), (x_ref, y_ref) in zip(with_channel, Batches(images, labels, 32, shuffle=True), strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref) and y.dtype == torch.int64


def test_batches_default_layout_is_nchw_and_channels_last_is_stored_nhwc(small):
    x, _ = next(iter(Batches(*small, 8)))
    assert x.stride() == (784, 784, 28, 1)
    conv = torch.nn.Conv2d(1, 4, 3)
    assert conv(x).is_contiguous()
    assert Batches(*small, 8, channels_last=True).images.stride() == (784, 1, 28, 1)  # converted once, up front


def test_batches_never_yield_an_empty_batch(small):
    images, labels = small
    for min_last in (0, 1, 2):
        assert [len(y) for _, y in Batches(images, labels, 25, min_last=min_last)] == [25] * 4


class MixedDevices(TorchDispatchMode):
    """Records every op given tensors on more than one device (the copy to the device aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        if len(devices) > 1 and func is not torch.ops.aten.copy_.default:
            self.mixed.append(str(func))
        return func(*args, **kwargs)


def test_batches_are_built_on_their_device(small):
    """The "meta" device stands in for an accelerator (placement only; the values are pinned on the CPU above):
    the split and every batch live there, and no op mixes host and device tensors (no host-to-device copy
    per batch but the draws of each epoch)."""
    batches = Batches(*small, 32, shuffle=True, augment=True, device="meta")
    assert batches.images.device.type == batches.labels.device.type == "meta" and batches.device.type == "meta"
    with MixedDevices() as mode:
        for x, y in batches:
            assert x.device.type == y.device.type == "meta" and x.shape[1:] == (1, 28, 28)
    assert mode.mixed == []


# ---------------------------------------------------------------------------------------------
# Three channels (colour data sets): the same rules per channel


def test_to_input_takes_three_channels():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    x = to_input(images, resize=16)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(to_input(images)[:, 1], images[:, 1].float() / 255)
    with pytest.raises(ValueError, match="C 1 or 3"):
        to_input(torch.zeros(2, 2, 8, 8, dtype=torch.uint8))


def test_batches_of_three_channels_augment_each_channel_alike():
    """Each channel of an augmented RGB image is what augmenting that channel alone as gray gives."""
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(10)
    rgb = list(Batches(images, labels, 4, shuffle=True, augment=True, seed=3))
    for c in range(3):
        gray = list(Batches(images[:, c], labels, 4, shuffle=True, augment=True, seed=3))
        for (xc, yc), (xg, yg) in zip(rgb, gray, strict=True):
            assert torch.equal(yc, yg) and torch.equal(xc[:, c : c + 1], xg)
    assert rgb[0][0].shape[1] == 3


def test_batches_of_three_channels_channels_last():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    [(x, _)] = list(Batches(images, torch.zeros(6, dtype=torch.long), 6, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, images.float() / 255)


def test_batches_refuse_two_channels():
    with pytest.raises(ValueError, match="C 1 or 3"):
        Batches(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 1)
