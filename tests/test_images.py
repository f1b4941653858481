"""Reading user images: only the formats the README names, upright as a photo viewer shows them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convzoo.images import FORMATS, ImageError, load_image


def test_an_eps_file_is_refused_without_starting_a_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "shoe.eps"
    Image.new("L", (20, 20), 200).save(path, format="EPS")

    def no_programs(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an external program was started")

    monkeypatch.setattr(subprocess, "Popen", no_programs)
    with pytest.raises(ImageError, match="not an image convzoo reads"):
        load_image(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_named_format_is_read(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    image = Image.new("L", (30, 30), 0)
    image.paste(255, (10, 5, 20, 25))
    image.save(path, format=fmt)
    pixels = load_image(path, invert="no")
    assert pixels.shape == (28, 28) and pixels.max() > 200 and pixels[0, 0] < 30


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo stored sideways with an orientation tag is read upright."""
    upright = Image.new("L", (40, 40), 0)
    upright.paste(255, (0, 0, 40, 10))  # a light band along the top edge
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote: the band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "photo.jpg"
    stored.save(path, format="JPEG", exif=exif, quality=95)
    pixels = load_image(path, invert="no").numpy().astype(np.int32)
    assert pixels[:5].mean() > 200 and pixels[-5:].mean() < 50  # the band is on top again
