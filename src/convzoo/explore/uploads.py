"""An image the page sends (a drawing, a dropped file) as convzoo pixels, within the explorer's limits.

The bytes are checked before anything is decoded: their count (``MAX_UPLOAD_BYTES``), then the
format and the pixel count from the header alone, through the same allow-list of formats as every
other image convzoo reads (``convzoo.images.FORMATS``). Only then does ``convzoo.images.load_image``
decode them, exactly as ``convzoo predict`` decodes a file.
"""

from __future__ import annotations

import io
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..images import FORMATS, ImageError, load_image

MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # a phone photo as JPEG; a drawing is a few kB of PNG
MAX_UPLOAD_PIXELS = 16_000_000  # 4000 x 4000: decoding costs about 4 bytes a pixel
# Images decoded at once: with the caps above, at most this many times ~64 MB of decoding memory.
_DECODING = threading.BoundedSemaphore(2)


class UploadTooLarge(ImageError):
    """An upload over the explorer's limits (HTTP 413)."""


def upload_pixels(data: bytes) -> torch.Tensor:
    """uint8 pixels ``(1, 28, 28)`` of the image in ``data`` (light object on dark, inverted if needed)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"the image is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")
    if not data:
        raise ImageError("no image in the request")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:  # reads the header only
                width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadTooLarge("the image is too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image the explorer reads ({', '.join(FORMATS)})") from None
    except Exception as exc:  # a damaged header: any of PIL's parsing errors
        raise ImageError(f"a corrupt image ({type(exc).__name__})") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise UploadTooLarge(f"the image is {width}x{height} pixels; the limit is {MAX_UPLOAD_PIXELS:,}")
    with _DECODING, tempfile.TemporaryDirectory(prefix="convzoo-explore-") as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(data)
        try:
            return load_image(path)[None]
        except ImageError as exc:
            raise ImageError(str(exc).replace(f"{path}: ", "")) from None
