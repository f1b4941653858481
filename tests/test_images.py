"""Images a user has, in any form, become the pixels training saw; only the formats the README names are read,
upright as a photo viewer shows them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.data import load_split
from convzoo.images import FORMATS, ImageError, as_pixels, image_pixels, load_image

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four real test images, uint8 (4, 28, 28)."""
    return load_split("test", SLICE)[0][:4]


def test_every_dtype_and_layout_of_the_same_images_gives_the_same_pixels(images: torch.Tensor) -> None:
    floats = images.float() / 255
    forms = {
        "uint8 (N, H, W)": images,
        "uint8 (N, 1, H, W)": images[:, None],
        "float in [0, 1] (N, 1, H, W)": floats[:, None],
        "float in [0, 255]": images.float(),
        "float64 in [0, 1]": floats.double(),
        "float16 in [0, 1]": floats.half(),
        "int64 0..255": images.long(),
        "numpy uint8": images.numpy(),
        "numpy float32 in [0, 1]": floats.numpy(),
        "RGB (N, 3, H, W)": images[:, None].expand(-1, 3, -1, -1),
        "RGB (N, H, W, 3)": images[..., None].expand(-1, -1, -1, 3),
        "a list of (H, W)": list(images),
        "a list of (1, H, W) floats": list(floats[:, None]),
        "a list of (1, 3, H, W)": [image.expand(1, 3, -1, -1) for image in images],
        "a list of numpy (H, W, 3)": [np.stack([image.numpy()] * 3, axis=-1) for image in images],
        "a list of PIL images": [Image.fromarray(image.numpy()) for image in images],
    }
    for name, form in forms.items():
        pixels = as_pixels(form)
        assert pixels.dtype == torch.uint8 and pixels.shape == (4, 28, 28), name
        assert torch.equal(pixels, images), name


def test_one_image_in_any_layout_is_a_batch_of_one(images: torch.Tensor) -> None:
    image = images[0]
    rgb = (image.expand(1, 3, -1, -1), image[..., None].expand(-1, -1, 3))
    for form in (image, image[None], image.float() / 255, *rgb, image.numpy(), Image.fromarray(image.numpy())):
        assert torch.equal(as_pixels(form), image[None])


def test_other_sizes_are_resized_and_light_backgrounds_inverted(images: torch.Tensor) -> None:
    image = images[0]
    large = torch.nn.functional.interpolate(image[None, None].float(), size=(84, 84), mode="nearest")[0, 0]
    assert (as_pixels(large).float() - image.float()).abs().mean() < 8  # the same picture, resampled
    dark_on_light = 255 - image
    assert torch.equal(as_pixels(dark_on_light), image[None])  # auto: a light border means invert
    assert torch.equal(as_pixels(dark_on_light, invert="no"), dark_on_light[None])
    assert torch.equal(as_pixels(image, invert="yes"), 255 - image[None])


def test_bool_masks_rgba_and_files(images: torch.Tensor, tmp_path: Path) -> None:
    mask = images[0] > 127
    assert torch.equal(as_pixels(mask)[0], mask.to(torch.uint8) * 255)
    rgba = torch.cat([images[0, None].expand(3, -1, -1), torch.full((1, 28, 28), 255, dtype=torch.uint8)])
    assert torch.equal(as_pixels(rgba.permute(1, 2, 0).contiguous()), images[:1])
    path = tmp_path / "shoe.png"
    Image.fromarray(images[1].numpy()).save(path)
    assert torch.equal(as_pixels(path), load_image(path)[None])
    assert torch.equal(as_pixels(str(path)), images[1:2])
    assert torch.equal(image_pixels(Image.open(path).convert("RGB")), images[1])


@pytest.mark.parametrize("bad, message", [
    ([], "no images given"),
    ("missing.png", "missing.png: no such file"),
    (torch.zeros(2, 5, 28, 28, 2), "expected (H, W), (C, H, W)"),
    (torch.zeros(0, 28, 28), "empty images"),
    (torch.zeros(3, 28, 28), "three gray images or one RGB image: give (3, 1, H, W) for the first"),
    ({"an": "image"}, "expected a path, a PIL image, a tensor or an array, got dict"),
])
def test_what_is_not_an_image_is_a_clear_error(bad: object, message: str) -> None:
    with pytest.raises(ImageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        as_pixels(bad)


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
