"""Batching a split in device memory, without a DataLoader.

``Batches`` moves the whole split to the device once, as uint8, and builds each batch with tensor
indexing, so converting, resizing and augmenting are a few batched ops on the device.
``to_input`` is the one conversion from uint8 pixels to network input, shared by training,
evaluation and prediction.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F


def to_input(images: torch.Tensor, resize: int | None = None) -> torch.Tensor:
    """Network input from uint8 pixels: ``(B, H, W)`` or ``(B, C, H, W)`` -> float32 ``(B, C, S, S)`` in [0, 1].

    ``C`` is 1 (gray) or 3 (RGB); ``(B, H, W)`` is read as ``C = 1``.

    Pixels are divided by 255 and, when ``resize`` is set and differs from the image side, resized
    bilinearly (``align_corners=False``, no antialiasing) on the images' device. ``S = resize or H``.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"to_input expects uint8 pixels, got {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"to_input expects (B, H, W) or (B, C, H, W) with C 1 or 3, got {tuple(images.shape)}")
    x = images.float().div_(255)
    if resize is not None and (resize, resize) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=False)
    return x


_PAD = 2  # random-crop padding, in pixels


def _augment(x: torch.Tensor, flip: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Flip ``x`` (B, C, H, W) where ``flip`` (B,) is set, then crop each image at its ``shift`` (B, 2) in [0, 2 * pad].

    The crop window slides over the zero-padded image; ``shift == pad`` leaves it in place. The
    crop is one ``gather`` of flat pixel indices, several times faster than fancy indexing.
    """
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    b, c, h, w = x.shape
    wp = w + 2 * _PAD
    padded = F.pad(x, (_PAD, _PAD, _PAD, _PAD)).view(b, c, -1)  # B x C x (H + 2 pad)(W + 2 pad)
    window = torch.arange(h, device=x.device).view(-1, 1) * wp + torch.arange(w, device=x.device)  # H x W
    start = shift[:, 0] * wp + shift[:, 1]  # B: flat index of each crop's top-left pixel
    index = (window.view(1, -1) + start.view(-1, 1)).unsqueeze(1).expand(b, c, h * w)  # the same crop per channel
    return padded.gather(2, index).view(b, c, h, w)


class Batches:
    """Mini-batches of one split, held on ``device`` as uint8; iterate for ``(x, y)`` per batch.

    ``images`` are uint8 ``(N, H, W)`` or ``(N, C, H, W)`` with ``C`` 1 or 3; ``x`` is float32
    ``(B, C, S, S)`` from ``to_input`` (``S = resize`` or ``H``), ``y`` int64 ``(B,)``.
    Each epoch uses one permutation drawn from a ``torch.Generator`` seeded with ``seed + epoch``
    (identity order without ``shuffle``); call ``set_epoch`` before each epoch, or every pass
    repeats the same order. ``augment`` flips each image horizontally with probability 1/2 and
    crops it at a random offset from its 2-pixel zero-padded copy; those draws come from the same
    generator, per example, so a run is reproducible and resumable at an epoch boundary.

    Distributed training: ``batch_size`` is the global batch, which must divide by ``world_size``.
    All ranks draw the same permutation and augmentation and walk the same global batches; rank
    ``r`` takes the contiguous rows ``[r * b // world_size, (r + 1) * b // world_size)`` of each
    global batch of ``b`` rows, i.e. ``batch_size // world_size`` of a full one. Ranks partition
    every batch, and what a given example looks like does not depend on ``world_size``.

    The last partial batch is kept unless ``drop_last``; it is dropped as well when it has fewer
    than ``min_last`` rows per rank, so that no rank ever gets an empty batch (``min_last=1``) or,
    for batch norm (``min_last=2``), a batch of one image. ``channels_last``
    gives the batches NHWC strides, for a model in that memory format.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        resize: int | None = None,
        augment: bool = False,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        min_last: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() not in (3, 4) or (images.dim() == 4
                                                                          and images.shape[1] not in (1, 3)):
            shape = tuple(images.shape)
            raise ValueError(f"images must be uint8 (N, H, W) or (N, C, H, W) with C 1 or 3, got {images.dtype} "
                             f"{shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} must be divisible by world_size {world_size}")
        if resize is not None and resize < 1:
            raise ValueError(f"resize must be a positive side length, got {resize}")
        channels = images.shape[1] if images.dim() == 4 else 1
        self.images = images.reshape(len(images), channels, *images.shape[-2:]).to(device)  # N x C x H x W, uint8
        if channels_last:
            # With one channel both layouts are the same bytes; only the strides say NHWC, and every
            # batch cut from them (indexing, conversion, resizing) inherits them. Convolutions then
            # take it as channels-last input, without converting it on every step and in backward.
            # With three channels the images are stored NHWC once here.
            self.images = self.images.to(memory_format=torch.channels_last)
        self.labels = labels.to(device=device, dtype=torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = self.images.device
        self.resize = resize
        self.augment = augment
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.min_last = min_last
        self.epoch = 0

    @property
    def num_examples(self) -> int:
        """Examples in the split (all ranks together, including any a dropped last batch leaves out)."""
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation and augmentation of ``epoch`` for the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + int(rest > 0 and not self.drop_last and rest >= self.min_last * self.world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_examples
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if self.augment:
            flip = torch.rand(n, generator=generator) < 0.5
            shift = torch.randint(0, 2 * _PAD + 1, (n, 2), generator=generator)
            flip, shift = flip.to(self.device), shift.to(self.device)
        order = order.to(self.device)
        for i in range(len(self)):
            start = i * self.batch_size
            b = min(self.batch_size, n - start)
            lo = start + self.rank * b // self.world_size
            hi = start + (self.rank + 1) * b // self.world_size
            index = order[lo:hi]
            x = self.images[index]
            if self.augment:
                x = _augment(x, flip[lo:hi], shift[lo:hi])
            if self.channels_last:  # the crop's gather returns NCHW strides; otherwise already NHWC, a no-op
                x = x.to(memory_format=torch.channels_last)
            yield to_input(x, self.resize), self.labels[index]
