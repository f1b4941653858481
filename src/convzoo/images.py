"""Reading user images (PNG, JPEG, BMP, GIF, TIFF, WebP) and preparing them like Fashion-MNIST pictures."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
# The formats convzoo reads (the README names them), all decoded by PIL itself. Others are refused
# before decoding: PIL's EPS reader, for one, starts Ghostscript, an external program.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


class ImageError(UserError):
    """A file that is not an image convzoo can read."""


# What PIL's decoders raise on damaged input (tests/test_reliability.py fuzzes load_image).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError, OverflowError)


def load_image(path: str | Path, *, invert: str = "auto", size: int = 28) -> torch.Tensor:
    """A ``(size, size)`` uint8 tensor: light object on a dark background, as in Fashion-MNIST.

    Any mode is accepted: colour becomes luminance, alpha is composited on the background,
    16-bit and float images are scaled to 0..255. ``invert``: ``auto`` inverts a picture whose
    border is mostly light (a product photo on white), ``yes`` always, ``no`` never.
    """
    path = Path(path)
    if invert not in ("auto", "yes", "no"):
        raise ValueError(f"invert must be auto, yes or no, got {invert!r}")
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about every oddity of a damaged file
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{path}: {width}x{height} pixels is larger than the limit of {MAX_PIXELS:,}")
                image.load()
                gray = _to_gray(ImageOps.exif_transpose(image))  # upright, as a photo viewer shows it
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image convzoo reads ({', '.join(FORMATS)})") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({type(exc).__name__}: {exc})") from None
    if gray.size[0] < 1 or gray.size[1] < 1:
        raise ImageError(f"{path}: empty image")
    pixels = np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None), dtype=np.uint8)
    if invert == "yes" or (invert == "auto" and _border_mean(np.asarray(gray)) > 127):
        pixels = 255 - pixels
    return torch.from_numpy(pixels.copy())


def _to_gray(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return ImageOps.grayscale(image.convert("RGB")) if image.mode != "L" else image


def _border_mean(pixels: np.ndarray) -> float:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return float(border.mean())
