"""A folder of images sorted by class: walking it, decoding it once, in parallel, into one uint8 array.

``read_folder`` is the one way in. It walks the tree (``scan``), reads every image's header, decides
one channel count and one size for all of them, refuses what cannot fit in memory, decodes each
image in a thread pool (Pillow releases the GIL while it decodes) and returns the images with
their labels and split. The decoded array is kept in the user cache (``convzoo.data.arrays``),
keyed by the exact file list, so the second read of an unchanged folder costs one file read.

Rules (docs/data.md says the same for users):
- Layout: ``DIR/train/<class>/...`` with ``DIR/test/<class>/...`` (or ``DIR/val/``) when ``DIR``
  has ``train/`` and one of those; otherwise ``DIR/<class>/...``, one pool. Images may lie in
  sub-folders of a class folder. Class names are the folder names in Python's ``sorted`` order
  (code points); a name that is not UTF-8 is shown with ``\\xNN`` escapes.
- Ignored: names starting with ``.`` (hidden), files whose suffix is not an image's (one summary
  warning), directories reached a second time (symlink loops; each directory is walked once).
- Channels: 3 (RGB) if any image has a colour mode (RGB, RGBA, P, CMYK, YCbCr, ...), else 1,
  unless ``grayscale``. Alpha is composited on white; 16-bit and float images are scaled to 0..255.
- Size: ``size`` if given, else the most common image size, its shorter side if not square. Other
  images are resized to that square (Pillow's bilinear filter, antialiased when shrinking).
- Bad images (corrupt, truncated, larger than ``MAX_PIXELS``): skipped with one warning while they
  are at most ``MAX_BAD_FRACTION`` of the images, else the read is refused naming the first.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DataError
from ..images import _DECODE_ERRORS, FORMATS, MAX_PIXELS
from .arrays import Arrays, folder_key, load_arrays, row_digests, save_arrays
from .memory import require_memory, size_text

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_BAD_FRACTION = 0.01  # bad images skipped up to this fraction of all images; beyond it, refused
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"}
_CHUNK = 256  # images per task of the decoding pool


def shown(name: str) -> str:
    """A file name as it may be printed: bytes that are not UTF-8 as ``\\xNN``, control characters escaped."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Scan:
    """What ``scan`` found: the image files in order, with label and split, and what it left out."""

    root: Path
    layout: str  # "pool" (DIR/<class>/...) or "train/test" or "train/val"
    classes: tuple[str, ...]  # shown names, in label order
    paths: tuple[str, ...]  # relative to root, in (split, class, name) order
    labels: tuple[int, ...]
    splits: tuple[int, ...]  # 0 train (or the pool), 1 test
    stats: tuple[tuple[int, int], ...]  # (st_size, st_mtime_ns) of each file
    not_images: tuple[str, ...]  # files skipped for their suffix


def _visible(directory: Path, seen: set[tuple[int, int]]) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """The non-hidden sub-directories (each directory only once: no symlink loop) and files of ``directory``."""
    try:
        entries = sorted((e for e in os.scandir(directory) if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"{shown(str(directory))}: cannot list: {e.strerror or e}") from None
    dirs, files = [], []
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # from the directory listing; a symlink's target is stat'ed
            st = entry.stat() if is_dir else None
        except OSError:  # a broken symlink, or one we may not follow
            files.append(entry)
            continue
        if st is not None:
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                dirs.append(entry)
        else:
            files.append(entry)
    return dirs, files


def _walk(directory: Path, seen: set[tuple[int, int]]) -> list[os.DirEntry]:
    """Every non-hidden file under ``directory``, in sorted order, each directory visited once."""
    dirs, files = _visible(directory, seen)
    for d in dirs:
        files.extend(_walk(Path(d.path), seen))
    return files


def _layout(root: Path, seen: set[tuple[int, int]]) -> tuple[str, list[tuple[int, Path]]]:
    dirs, _ = _visible(root, seen)
    names = {d.name: Path(d.path) for d in dirs}
    test = "test" if "test" in names else "val" if "val" in names else None
    if "train" in names and test:
        return f"train/{test}", [(0, names["train"]), (1, names[test])]
    if "train" in names and len(names) == 1:
        raise DataError(f"{shown(str(root))}: has train/ but no test/ or val/ beside it; add one, or put the class "
                        "folders directly in the folder to split them")
    return "pool", [(0, root)]


def scan(root: str | Path) -> Scan:
    """Walk ``root``: its layout, its classes and every image file. Raises ``DataError`` on an unusable tree."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{shown(str(root))}: not a folder")
    seen = {(root.stat().st_dev, root.stat().st_ino)}
    layout, parts = _layout(root, set(seen))
    for _, top in parts:
        seen.add((top.stat().st_dev, top.stat().st_ino))
    by_split: list[dict[str, list[os.DirEntry]]] = []
    for _, top in parts:
        class_dirs, _stray = _visible(top, seen)
        by_split.append({d.name: _walk(Path(d.path), seen) for d in class_dirs})
    names = sorted(set().union(*by_split))
    where = [f"{shown(str(top))}/" for _, top in parts]
    if not names:
        raise DataError(f"{where[0]}: no class folders (expected {where[0]}<class>/<image>)")
    for split, found in enumerate(by_split[1:], 1):
        if extra := sorted(set(found) - set(by_split[0])):
            raise DataError(f"{where[split]}{shown(extra[0])}: a class with no folder in {where[0]}")
    prefix = len(os.path.join(root, ""))  # every path found starts with root/: cheaper than os.path.relpath
    paths, labels, splits, stats, not_images = [], [], [], [], []
    for (split, _), found in zip(parts, by_split):
        for label, name in enumerate(names):
            entries = found.get(name, [])
            images = [e for e in entries if e.name.lower().endswith(SUFFIXES)]
            not_images += [e.path[prefix:] for e in entries if not e.name.lower().endswith(SUFFIXES)]
            if not images and split == 0:
                raise DataError(f"{where[0]}{shown(name)}: class folder with no images ({', '.join(SUFFIXES)})")
            for e in images:
                try:
                    st = e.stat()
                except OSError:
                    st = None
                paths.append(e.path[prefix:])
                labels.append(label)
                splits.append(split)
                stats.append((st.st_size, st.st_mtime_ns) if st else (-1, -1))
    if len(names) < 2:
        raise DataError(f"{where[0]}: only one class folder ({shown(names[0])}); a classifier needs at least two")
    return Scan(root, layout, tuple(shown(n) for n in names), tuple(paths), tuple(labels), tuple(splits),
                tuple(stats), tuple(not_images))


def _probe(path: str) -> tuple[int, int, str] | str:
    """``(width, height, mode)`` from an image's header, or why it cannot be read."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                return f"larger than the limit of {MAX_PIXELS:,} pixels (decompression bomb guard)"
            return (*image.size, image.mode)
    except Image.DecompressionBombError:
        return f"larger than the limit of {MAX_PIXELS:,} pixels (decompression bomb guard)"
    except _DECODE_ERRORS as e:  # includes UnidentifiedImageError, an OSError
        return f"not a readable image ({type(e).__name__}: {e})"


def _convert(image: Image.Image, channels: int) -> Image.Image:
    """``image`` in mode L (``channels`` 1) or RGB (3), by the rules in the module's docstring."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def _decode(path: str, side: int, channels: int, out: np.ndarray) -> str | None:
    """Decode ``path`` into ``out`` (C, side, side); return why it failed, or None."""
    try:
        with Image.open(path, formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                return f"larger than the limit of {MAX_PIXELS:,} pixels (decompression bomb guard)"
            image.load()
            image = _convert(ImageOps.exif_transpose(image), channels)
            if image.size != (side, side):
                image = image.resize((side, side), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError:
        return f"larger than the limit of {MAX_PIXELS:,} pixels (decompression bomb guard)"
    except _DECODE_ERRORS as e:
        return f"corrupt or truncated ({type(e).__name__}: {e})"
    out[:] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    return None


def read_image(path: str | Path, channels: int, size: int) -> torch.Tensor:
    """One image file as a folder's images are decoded: uint8 ``(channels, size, size)`` (for ``predict``).

    Unlike ``convzoo.images.load_image`` nothing is inverted: the network saw the folder's pixels as they are.
    """
    out = np.empty((channels, size, size), dtype=np.uint8)
    problem = _decode(str(path), size, channels, out)
    if problem is not None:
        raise DataError(f"{shown(str(path))}: {problem}")
    return torch.from_numpy(out)


def _in_pool(items: list, work: Callable[[int], object]) -> list:
    """``[work(i) for i in range(len(items))]`` in a thread pool, in chunks."""
    def chunk(start: int) -> list:
        return [work(i) for i in range(start, min(start + _CHUNK, len(items)))]

    workers = min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        return [r for part in pool.map(chunk, range(0, len(items), _CHUNK)) for r in part]


def _shape(probes: list, grayscale: bool, size: int | None) -> tuple[int, int]:
    """(channels, side) for every image, by the module's rules, from the headers read."""
    good = [p for p in probes if not isinstance(p, str)]
    if not good:
        return 1, size or 1
    channels = 1 if grayscale or not any(mode in _COLOUR_MODES for _, _, mode in good) else 3
    if size is None:
        (w, h), _ = Counter((w, h) for w, h, _ in good).most_common(1)[0]
        size = min(w, h)
    return channels, size


def _bad_rule(bad: list[tuple[str, str]], total: int) -> str | None:
    """The warning for the images skipped, or ``DataError`` when there are too many of them."""
    if not bad:
        return None
    first = f"{shown(bad[0][0])}: {bad[0][1]}"
    if len(bad) > MAX_BAD_FRACTION * total:
        raise DataError(f"{len(bad)} of {total} images cannot be read, more than {MAX_BAD_FRACTION:.0%} "
                        f"(fix or remove them); the first: {first}")
    return f"skipped {len(bad)} of {total} images that cannot be read; the first: {first}"


def _fit_advice(n: int, channels: int, side: int) -> str:
    options = [f"a size of {side // 2} would need {size_text(n * channels * (side // 2) ** 2)}"] if side > 1 else []
    if channels == 3:
        options.insert(0, f"grayscale would need {size_text(n * side * side)}")
    return "; ".join(options + ["or use fewer images"])


def decode(found: Scan, *, grayscale: bool = False, size: int | None = None) -> Arrays:
    """Decode every image of ``found`` into one uint8 array, by the module's rules (no cache)."""
    files = [os.path.join(found.root, p) for p in found.paths]
    probes = _in_pool(files, lambda i: _probe(files[i]))
    channels, side = _shape(probes, grayscale, size)
    n = len(files)
    require_memory(n * channels * side * side,
                   f"{shown(str(found.root))} ({n:,} images of {channels} x {side} x {side} pixels)",
                   _fit_advice(n, channels, side))
    images = np.empty((n, channels, side, side), dtype=np.uint8)
    errors = _in_pool(files, lambda i: probes[i] if isinstance(probes[i], str)
                      else _decode(files[i], side, channels, images[i]))
    bad = [(found.paths[i], e) for i, e in enumerate(errors) if e is not None]
    notes = [note] if (note := _bad_rule(bad, n)) else []
    keep = np.array([e is None for e in errors])
    if not keep.all():
        images = images[keep]
    labels = np.asarray(found.labels, dtype=np.int64)[keep]
    splits = np.asarray(found.splits, dtype=np.uint8)[keep]
    paths = tuple(p for p, k in zip(found.paths, keep) if k)
    return Arrays(images, labels, splits, row_digests(images), paths, tuple(notes))


def read_folder(
    root: str | Path, *, grayscale: bool = False, size: int | None = None, warn: Callable[[str], None] | None = None,
) -> tuple[Scan, Arrays]:
    """The folder's scan and decoded arrays, from the cache when its key (file list and options) matches."""
    found = scan(root)
    if size is not None and not 1 <= size <= math.isqrt(MAX_PIXELS):
        raise DataError(f"size must be between 1 and {math.isqrt(MAX_PIXELS)} pixels, got {size}")
    say = warn or (lambda _: None)
    if found.not_images:
        say(f"ignored {len(found.not_images)} files that are not images ({', '.join(SUFFIXES)}); "
            f"the first: {shown(found.not_images[0])}")
    key = folder_key(found.root, found.paths, found.labels, found.splits, found.stats, grayscale, size)
    arrays, problem = load_arrays(found.root, key)
    if arrays is None:
        if problem:
            say(f"{problem}; decoding the folder again")
        arrays = decode(found, grayscale=grayscale, size=size)
        save_arrays(found.root, key, arrays)
    for note in arrays.notes:
        say(note)
    return found, arrays
