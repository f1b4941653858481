"""Classifying images with a trained model: the top classes, and whether an image is unlike Fashion-MNIST.

An image is read as the run's data was (``read_pixels``): for a run on a folder of images or on
colour data (CIFAR-10), with the data's channels and size, as ``convzoo.data.folder`` decodes the
folder, never inverted (unless ``invert="yes"``); for a run on gray IDX data (Fashion-MNIST, MNIST,
Kuzushiji-MNIST, an IDX folder: light objects on a dark background), as one gray image of the
data's size, inverted when its border is mostly light (``invert="auto"``). Only a run on
Fashion-MNIST checks whether an image is unlike its data: the reference ranges are Fashion-MNIST's.

    find_images(["shoe.jpg", "photos/", "scans/*.png"])   files, folders and globs -> image files
    predict_images(model, config, device, images)         files, folders, globs, tensors, PIL images -> Predictions
    classify(model, config, pixels, device, top_k=3)      uint8 pixels -> one ``Prediction`` per image
    unlike_training_data(pixels)                          -> why each image is unlike the data set, or None

A network answers with confidence whatever it is shown: a blank page gets a class and often a
high probability. Whether an image looks like a Fashion-MNIST picture at all is therefore judged
from the image itself, by four statistics that every one of the 60,000 training images keeps
within a range (``REFERENCE``); an image outside any range is flagged, with the reason.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .config import TrainConfig
from .data import CLASSES, FASHION_DESCRIPTION, to_input
from .data.folder import read_image
from .errors import ConfigError
from .escape import terminal
from .evaluate import scores
from .images import ImageError, as_pixels, load_image
from .terms import option

# What a folder or a glob contributes: files PIL reads, by their suffix (a file named outright is always tried).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm",
                            ".pbm", ".pnm"})

# Per-image statistics (pixels / 255), in the order they are checked. Every one of the 60,000
# training images keeps within std 0.065..0.476, border 0.003..0.476, ink 0.038..0.909, roughness
# 0.19..1.80 (99.99% of them within std 0.077..0.468, border 0.004..0.397, ink 0.068..0.892,
# roughness 0.22..1.54); widened a little, no image of the test split is flagged (tests/test_predict.py).
REFERENCE = {
    "std": (0.055, 1.0),  # contrast; a blank page has none
    "border": (0.0, 0.6),  # mean of the 2-pixel frame: objects lie on a dark background
    "ink": (0.035, 0.95),  # fraction of pixels brighter than 0.1: how much of the frame the object covers
    "roughness": (0.0, 2.0),  # mean |difference| of neighbouring pixels over the std: uniform noise is ~2.3
}
_WHY = {
    ("std", False): "blank: one flat tone, no object",
    ("ink", False): "almost empty: the object covers {value:.1%} of the frame (training images: at least 3.8%)",
    ("ink", True): "the frame is filled: {value:.1%} of it is bright (training images: at most 91%)",
    ("border", True): "the background is not dark (border mean {value:.2f}; a dark object on light needs inverting)",
    ("roughness", True): "noise-like: neighbouring pixels differ {value:.1f}x the contrast (training images: "
                         "at most 1.8x)",
}


@dataclass
class Prediction:
    """One image's classification: the most probable classes first, by name in ``top`` and by label (the class's
    index) in ``top_labels``."""

    image: str  # the file, or "image N" for an image given as a tensor or PIL image
    top_labels: list[tuple[int, float]]  # (label, probability), most probable first
    unlike_training_data: str | None = None  # why the image is nothing like Fashion-MNIST, or None
    classes: Sequence[str] = field(default=CLASSES, repr=False)  # the run's class names, in label order

    @property
    def top(self) -> list[tuple[str, float]]:
        """``(class name, probability)``, most probable first."""
        return [(self.classes[i], p) for i, p in self.top_labels]

    @property
    def label(self) -> int:
        return self.top_labels[0][0]

    @property
    def class_name(self) -> str:
        return self.classes[self.label]

    @property
    def probability(self) -> float:
        return self.top_labels[0][1]

    def to_json(self) -> dict:
        return {"image": self.image, "class": self.class_name, "label": self.label,
                "probability": round(self.probability, 4),
                "top_k": [{"class": self.classes[i], "label": i, "probability": round(p, 4)}
                          for i, p in self.top_labels],
                "unlike_training_data": self.unlike_training_data is not None, "why": self.unlike_training_data}

    def format(self) -> str:
        """One line: ``image: Sneaker 91.2% (Sandal 5.1%, Ankle boot 2.0%)``, and the warning if any.

        The image's name is shown as ``convzoo.escape.terminal`` writes it: a file name cannot
        send escape sequences to the terminal or break the line.
        """
        others = ", ".join(f"{terminal(name)} {p:.1%}" for name, p in self.top[1:])
        line = (f"{terminal(self.image)}: {terminal(self.class_name)} {self.probability:.1%}"
                + (f" ({others})" if others else ""))
        if self.unlike_training_data:
            line += f"  [unlike the training data: {self.unlike_training_data}]"
        return line


def find_images(specs: Sequence[str | Path], *, warn: Callable[[str], None] | None = None) -> list[Path]:
    """The image files that ``specs`` name: files as given, each folder's image files, each glob's matches.

    Folders and globs contribute the files with an image suffix (``IMAGE_SUFFIXES``), sorted; a
    folder is not searched recursively, a glob with ``**`` is, without entering a directory
    through a symbolic link (a link loop cannot hang it) and without hidden directories, as
    ``glob`` does. Each file is listed once, however many links and patterns reach it. A file
    a folder or glob found but convzoo cannot read (a format it lists but does not decode, a
    damaged file) is left out, and ``warn`` (default: a ``warning:`` line on stderr) names them
    all in one line; a file named outright is kept, so reading it reports its error. More than
    ``MAX_IMAGES`` files, a name that is none of these, a folder without readable images and a glob
    that matches none are ``ImageError``s.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    skipped: list[str] = []

    def add(path: Path, probe: bool) -> bool:
        try:
            st = path.stat()
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = None  # a missing file named outright: load_image reports it, naming it
        if key is not None and key in seen:
            return True
        if probe:
            try:
                load_image(path)
            except ImageError as exc:
                skipped.append(str(exc))
                return False
        if key is not None:
            seen.add(key)
        if len(found) >= MAX_IMAGES:
            raise ImageError(f"more than {MAX_IMAGES:,} image files: name fewer files, folders or globs")
        found.append(path)
        return True

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in _folder_files(path) if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ImageError(f"{spec}: a folder with no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            if not [p for p in files if add(p, probe=True)]:
                raise ImageError(f"{spec}: a folder with no image file convzoo can read ({skipped[-1]})")
        elif path.exists() or not glob.has_magic(str(spec)):
            add(path, probe=False)
        else:
            files = sorted({p for p in _glob(str(spec)) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()})
            if not files:
                raise ImageError(f"{spec}: matches no image file")
            if not [p for p in files if add(p, probe=True)]:
                raise ImageError(f"{spec}: matches no image file convzoo can read ({skipped[-1]})")
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        message = f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} convzoo cannot read: {shown}"
        (warn or _warn)(message)
    return found


# The most image files one prediction takes (each is decoded, and held as 28x28 pixels).
MAX_IMAGES = 100_000


def _warn(message: str) -> None:
    print(f"warning: {terminal(message)}", file=sys.stderr, flush=True)


def _folder_files(folder: Path) -> list[Path]:
    """The regular files in ``folder`` (a link to a file counts), not searched recursively."""
    with os.scandir(folder) as entries:
        return [folder / entry.name for entry in entries if entry.is_file()]


def _glob(pattern: str) -> Iterator[Path]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` never enters a directory through a link.

    ``glob`` follows directory links under ``**``, so a link to a parent directory repeats the
    same files until the path is too long. Here ``**`` is every real directory below, each once
    (also by device and inode, for bind mounts); the other parts match as ``glob`` matches them.
    """
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) and not glob.has_magic(parts[fixed]):
        fixed += 1
    base = Path(*parts[:fixed])  # Path() when the first part is a pattern
    yield from _match(base, parts[fixed:])


def _match(base: Path, parts: Sequence[str]) -> Iterator[Path]:
    if not parts:
        if base.exists():
            yield base
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        for folder in _real_folders(base):
            yield from _match(folder, rest)
            if not rest:
                yield from (p for p in _folder_files(folder) if not p.name.startswith("."))  # as glob: no hidden files
    elif glob.has_magic(head):
        try:
            with os.scandir(base) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError:
            return  # as glob: an unreadable folder matches nothing
        for name in fnmatch.filter(names, head):
            if name.startswith(".") and not head.startswith("."):
                continue  # as glob: hidden names only for a pattern that starts with "."
            yield from _match(base / name, rest)
    else:
        yield from _match(base / head, rest)


def _real_folders(top: Path) -> Iterator[Path]:
    """``top`` and every directory below it that is not hidden, never through a link, each once."""
    seen: set[tuple[int, int]] = set()
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as entries:
                below = sorted(folder / e.name for e in entries
                               if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
        except OSError:
            continue  # as glob: an unreadable or vanished folder contributes nothing
        yield folder
        stack.extend(reversed(below))


def image_statistics(pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics of ``REFERENCE`` for uint8 pixels ``(N, H, W)``, one value per image each."""
    x = pixels.float() / 255
    std = x.std(dim=(1, 2), correction=0)
    edges = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2)) + (x[:, 1:] - x[:, :-1]).abs().mean(dim=(1, 2))
    border = torch.cat([x[:, :2].flatten(1), x[:, -2:].flatten(1), x[:, :, :2].flatten(1), x[:, :, -2:].flatten(1)],
                       dim=1)
    return {"std": std, "ink": (x > 0.1).float().mean(dim=(1, 2)), "border": border.mean(dim=1),
            "roughness": torch.where(std > 0, edges / std.clamp(min=1e-6), torch.zeros_like(std))}


def unlike_training_data(pixels: torch.Tensor) -> list[str | None]:
    """For each image of uint8 pixels ``(N, H, W)``: why it is unlike every Fashion-MNIST training image, or None."""
    stats = image_statistics(pixels)
    reasons: list[str | None] = []
    for i in range(len(pixels)):
        why = None
        for name, (low, high) in REFERENCE.items():
            value = float(stats[name][i])
            if not low <= value <= high:
                why = _WHY[(name, value > high)].format(value=value)
                break  # the first reason is the clearest: a blank image is also "almost empty"
        reasons.append(why)
    return reasons


@torch.no_grad()
def probabilities(model: nn.Module, config: TrainConfig, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Class probabilities ``(N, classes)`` of uint8 pixels ``(N, H, W)`` or ``(N, C, H, W)``, scored as the run
    evaluated (input size, autocast, test-time augmentation), in batches of the run's evaluation batch size; on the
    CPU."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pixels), config.eval_batch_size):
        x = to_input(pixels[start : start + config.eval_batch_size].to(device), config.input_size)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(torch.softmax(scores(model, x, config.amp, config.tta).float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out)


TOP_K = 3  # top classes shown per image by default (all of them for a run of fewer classes)


def check_top_k(top_k: int, most: int = len(CLASSES)) -> None:
    """Refuse a count of top classes that is not between 1 and ``most``, the run's number of classes."""
    if not 1 <= top_k <= most:
        raise ConfigError(f"{option('top_k')} must be between 1 and {most:,}, got {top_k}", field="top_k")


def classify(model: nn.Module, config: TrainConfig, pixels: torch.Tensor, device: torch.device, *,
             names: Sequence[str] | None = None, top_k: int | None = None, classes: Sequence[str] = CLASSES,
             check_unlike: bool = True) -> list[Prediction]:
    """One ``Prediction`` per image of uint8 pixels ``(N, H, W)`` (``convzoo.images.as_pixels``) or
    ``(N, C, H, W)`` (``read_pixels``).

    ``names`` label the images (default ``image 0``, ``image 1``, ...); ``top_k`` classes are kept per image (at
    most the number of ``classes``, the run's class names; default ``TOP_K``, or all of fewer); ``check_unlike``:
    judge each (gray) image against Fashion-MNIST's ranges (only for a run on Fashion-MNIST).
    """
    top_k = min(TOP_K, len(classes)) if top_k is None else top_k
    check_top_k(top_k, len(classes))
    names = list(names) if names is not None else [f"image {i}" for i in range(len(pixels))]
    if len(names) != len(pixels):
        raise ValueError(f"{len(names)} names for {len(pixels)} images")
    top_p, top_i = probabilities(model, config, pixels, device).topk(top_k, dim=1)
    gray = pixels if pixels.dim() == 3 else pixels[:, 0] if pixels.shape[1] == 1 else None
    reasons = unlike_training_data(gray) if check_unlike and gray is not None else [None] * len(pixels)
    return [Prediction(name, [(int(i), float(p)) for i, p in zip(labels, probs)], why, tuple(classes))
            for name, labels, probs, why in zip(names, top_i, top_p, reasons)]


def reads_as_folder(data: dict) -> bool:
    """Whether a run's images are read as its folder was decoded (a folder of images, or colour data) rather than
    as gray light-on-dark IDX images."""
    return data.get("split", {}).get("rule") in ("folders", "stratified") or data.get("channels") == 3


def read_pixels(item: object, data: dict, invert: str = "auto") -> torch.Tensor:
    """One item (a file, a PIL image, a tensor or array) as uint8 pixels the run ``data`` (its description) takes:
    ``(N, H, W)`` for a run on gray IDX data, else ``(N, C, S, S)`` with the data's channels and size."""
    size, channels = int(data["size"]), int(data["channels"])
    if not reads_as_folder(data):
        return as_pixels(item, invert=invert, size=size)
    if invert not in ("auto", "yes", "no"):
        raise ConfigError(f"{option('invert')} must be auto, yes or no, got {invert!r}", field="invert")
    if isinstance(item, (str, Path)):
        if not Path(item).is_file():
            raise ImageError(f"{item}: no such file")
        pixels = read_image(item, channels, size)[None]
    elif channels == 1:
        pixels = as_pixels(item, invert="no", size=size)[:, None]
    else:
        pixels = _colour(item, size)
    return 255 - pixels if invert == "yes" else pixels


def _colour(item: object, size: int) -> torch.Tensor:
    """A PIL image or a uint8 ``(3, H, W)`` / ``(N, 3, H, W)`` tensor or array as uint8 ``(N, 3, size, size)``."""
    if isinstance(item, Image.Image):
        item = torch.from_numpy(np.asarray(item.convert("RGB")).copy()).permute(2, 0, 1)
    elif isinstance(item, np.ndarray):
        item = torch.from_numpy(np.ascontiguousarray(item))
    if not isinstance(item, torch.Tensor) or item.dtype != torch.uint8 or item.dim() not in (3, 4) \
            or item.shape[-3] != 3 or min(item.shape[-2:]) < 1:
        shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
        raise ImageError(f"a run on colour images takes files, PIL images or uint8 (3, H, W) or (N, 3, H, W) "
                         f"tensors, got {shape}")
    x = item.reshape(-1, 3, *item.shape[-2:])
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True).round().to(torch.uint8)  # bilinear: within the pixels' 0..255
    return x


def predict_images(model: nn.Module, config: TrainConfig, device: torch.device, images: object, *,
                   top_k: int | None = None, invert: str = "auto", data: dict | None = None) -> list[Prediction]:
    """Classify ``images`` with a run's ``model``: one ``Prediction`` each, in order.

    ``images``: a path (a file, a folder of images, a glob such as ``"photos/*.jpg"``), a PIL image, a
    tensor or NumPy array of one image or a batch (any dtype and layout that
    ``convzoo.images.as_pixels`` takes), or a list of these. ``data``: the run's data (``Run.data``; default
    Fashion-MNIST), which says how images are read (the module's docstring). ``invert``: ``auto`` makes a dark
    object on a light background light on dark, as Fashion-MNIST is (for a run on gray IDX data; never for a
    folder of images); ``yes``; ``no``.
    """
    data = data if data is not None else FASHION_DESCRIPTION
    if top_k is not None:
        check_top_k(top_k, len(data["classes"]))
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ConfigError("no images given", field="images")
    if all(isinstance(item, (str, Path)) for item in items):  # paths only: found together, each file once
        items = find_images(items)
    names, pixels = [], []
    for item in items:
        for one in find_images([item]) if isinstance(item, str) or (isinstance(item, Path) and not item.is_file()) \
                else [item]:
            batch = read_pixels(one, data, invert)
            names += [str(one)] if isinstance(one, Path) else [f"image {len(names) + i}" for i in range(len(batch))]
            pixels.append(batch)
    return classify(model, config, torch.cat(pixels), device, names=names, top_k=top_k,
                    classes=data["classes"], check_unlike=data.get("data") == "fashion-mnist")
