"""Reading user images (PNG, JPEG, BMP, GIF, TIFF, WebP) and preparing them like Fashion-MNIST pictures.

Every image a user gives becomes *pixels*: a uint8 ``(size, size)`` tensor, a light object on a
dark background, the form of the data set's own images (``convzoo.data.to_input`` turns those
into network input). ``load_image`` reads a file, ``image_pixels`` converts a PIL image, and
``as_pixels`` any of those, or tensors and arrays of any dtype and layout, as a batch.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
    _check_invert(invert)
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
    return _gray_pixels(gray, invert, size)


def image_pixels(image: Image.Image, *, invert: str = "auto", size: int = 28) -> torch.Tensor:
    """A PIL image as ``load_image`` prepares a file: uint8 ``(size, size)``, light object on a dark background."""
    _check_invert(invert)
    if image.width < 1 or image.height < 1:
        raise ImageError("empty image")
    return _gray_pixels(_to_gray(image), invert, size)


def _check_invert(invert: str) -> None:
    if invert not in ("auto", "yes", "no"):
        raise ValueError(f"invert must be auto, yes or no, got {invert!r}")


def _gray_pixels(gray: Image.Image, invert: str, size: int) -> torch.Tensor:
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


# ITU-R 601 luma, as PIL's conversion to mode L (what load_image applies to colour files).
_LUMA = (0.299, 0.587, 0.114)


def as_pixels(images: object, *, invert: str = "auto", size: int = 28) -> torch.Tensor:
    """Any image or batch a user has, as uint8 pixels ``(N, size, size)`` (light object on dark).

    ``images`` is a file path, a PIL image, a tensor or NumPy array, or a list of these. Arrays
    may be ``(H, W)`` (one gray image), ``(H, W, 3)`` or ``(H, W, 4)`` (one RGB(A) image, as NumPy
    and PIL lay it out), ``(N, H, W)`` (gray images, as ``load_split`` gives them; ``(1, H, W)`` is
    one), ``(N, C, H, W)`` with ``C`` 1 or 3, or ``(N, H, W, C)`` with ``C`` 3 or 4. A 3-D array
    of 3 rows, ``(3, H, W)``, could be three gray images or one RGB image and is refused: give
    ``(3, 1, H, W)`` or ``(1, 3, H, W)``. Any dtype: uint8 and other integers are 0..255, a float
    array whose values all lie in [0, 1] is scaled by 255 (otherwise read as 0..255), bool is
    0 or 255. Colour becomes luminance, every image is resized to ``size x size`` (bilinear,
    antialiased) and, with ``invert="auto"``, inverted when its border is mostly light.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageError("no images given")
        return torch.cat([as_pixels(item, invert=invert, size=size) for item in images])
    _check_invert(invert)
    if isinstance(images, (str, Path)):
        return load_image(images, invert=invert, size=size)[None]
    if isinstance(images, Image.Image):
        return image_pixels(images, invert=invert, size=size)[None]
    if isinstance(images, np.ndarray):
        # a copy when the array is read-only (np.asarray of a PIL image): torch warns about sharing those
        images = torch.from_numpy(np.ascontiguousarray(images) if images.flags.writeable else np.array(images))
    if not isinstance(images, torch.Tensor):
        raise ImageError(f"expected a path, a PIL image, a tensor or an array, got {type(images).__name__}")
    return _tensor_pixels(images, invert, size)


def _batch_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` as ``(N, C, H, W)`` by the rules of ``as_pixels``."""
    shape = tuple(t.shape)
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return t.permute(2, 0, 1)[None]
    if t.dim() == 3 and shape[0] == 3:
        raise ImageError(f"images of shape {shape} are three gray images or one RGB image: give (3, 1, H, W) for "
                         "the first, (1, 3, H, W) or (H, W, 3) for the second")
    if t.dim() == 3:
        return t[:, None]
    if t.dim() == 4 and shape[1] in (1, 3):
        return t
    if t.dim() == 4 and shape[-1] in (1, 3, 4):
        return t.permute(0, 3, 1, 2)
    raise ImageError(f"images of shape {shape}: expected (H, W), (C, H, W), (H, W, C), (N, H, W) or (N, C, H, W) "
                     "with 1 or 3 channels")


def _tensor_pixels(t: torch.Tensor, invert: str, size: int) -> torch.Tensor:
    x = _batch_layout(t.detach().cpu())
    if min(x.shape) < 1:
        raise ImageError(f"empty images (shape {tuple(t.shape)})")
    if x.dtype == torch.bool:
        x = x.to(torch.uint8) * 255
    if x.is_complex():
        raise ImageError(f"images must be real numbers, got {x.dtype}")
    floating = x.is_floating_point()
    x = torch.nan_to_num(x.to(torch.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if floating and x.min() >= 0 and x.max() <= 1:
        x = x * 255
    x = x.clamp(0, 255)
    if x.shape[1] == 4:  # RGBA: composited on white, as load_image does
        x = x[:, :3] * (x[:, 3:] / 255) + 255 * (1 - x[:, 3:] / 255)
    if x.shape[1] == 3:
        x = sum(w * x[:, c : c + 1] for c, w in enumerate(_LUMA))
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).mean(dim=(1, 2))
    x = x.float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    flip = torch.full_like(border, invert == "yes", dtype=torch.bool) if invert != "auto" else border > 127
    x = torch.where(flip.view(-1, 1, 1, 1), 255 - x, x)
    return x.round().to(torch.uint8)[:, 0]  # in 0..255: clamped above, then only averaged (bilinear) and inverted
