"""Images a user has, in any form, become the pixels training saw; only the formats the README names are read,
upright as a photo viewer shows them."""

from __future__ import annotations

import math
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


# --- the conversions on hand-made pictures ------------------------------------------------------
# Luminance as Pillow's conversion to mode L computes it (ITU-R 601: 0.299 R + 0.587 G + 0.114 B),
# by hand: red 76.2 -> 76, green 149.7 -> 150, blue 29.1 -> 29, (100, 150, 200) 140.75 -> 141.
BANDS = [((255, 0, 0), 76), ((0, 255, 0), 150), ((0, 0, 255), 29), ((100, 150, 200), 141)]


def _bands_rgb() -> np.ndarray:
    """28x28 RGB: four horizontal bands of 7 rows, one colour each."""
    rgb = np.zeros((28, 28, 3), dtype=np.uint8)
    for i, (colour, _) in enumerate(BANDS):
        rgb[7 * i : 7 * (i + 1)] = colour
    return rgb


def test_colour_becomes_pillows_luminance_by_every_road(tmp_path: Path) -> None:
    rgb = _bands_rgb()
    expected = np.repeat([gray for _, gray in BANDS], 7)[:, None].repeat(28, axis=1)
    Image.fromarray(rgb).save(tmp_path / "bands.png")
    roads = {
        "file": load_image(tmp_path / "bands.png", invert="no"),
        "PIL image": image_pixels(Image.fromarray(rgb), invert="no"),
        "array (H, W, 3)": as_pixels(rgb.copy(), invert="no")[0],
        "tensor (1, 3, H, W)": as_pixels(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None], invert="no")[0],
    }
    for road, pixels in roads.items():
        assert pixels.dtype == torch.uint8 and pixels.tolist() == expected.tolist(), road
    assert np.asarray(Image.fromarray(rgb).convert("L")).tolist() == expected.tolist()  # Pillow's own L


def _framed(border: int, inside: int = 50) -> np.ndarray:
    """28x28 gray: a one-pixel frame of ``border`` around ``inside``."""
    gray = np.full((28, 28), border, dtype=np.uint8)
    gray[1:-1, 1:-1] = inside
    return gray


@pytest.mark.parametrize("border, inverted", [(200, True), (128, True), (127, False), (100, False), (0, False)])
def test_auto_inverts_exactly_when_the_border_is_light(border: int, inverted: bool, tmp_path: Path) -> None:
    gray = _framed(border)
    expected = 255 - gray if inverted else gray
    Image.fromarray(gray).save(tmp_path / "framed.png")
    for pixels in (load_image(tmp_path / "framed.png"), image_pixels(Image.fromarray(gray)),
                   as_pixels(gray.copy())[0], as_pixels(torch.from_numpy(gray.copy()))[0]):
        assert pixels.numpy().tolist() == expected.tolist()


def test_yes_always_inverts_and_no_never(tmp_path: Path) -> None:
    for border in (0, 255):
        gray = _framed(border)
        for invert, expected in (("yes", 255 - gray), ("no", gray)):
            assert image_pixels(Image.fromarray(gray), invert=invert).numpy().tolist() == expected.tolist()
            assert as_pixels(gray.copy(), invert=invert)[0].numpy().tolist() == expected.tolist()
    with pytest.raises(ValueError, match="invert must be auto, yes or no"):
        image_pixels(Image.fromarray(_framed(0)), invert="maybe")


@pytest.mark.parametrize("side", [2, 56, 100])
def test_resizing_to_28_is_pillows_bilinear(side: int, tmp_path: Path) -> None:
    """A file or PIL image is resized by Pillow's bilinear filter (antialiased when it shrinks);
    a tensor or array by torch's, within one level of it."""
    gray = np.random.default_rng(side).integers(0, 256, (side, side)).astype(np.uint8)
    pil = Image.fromarray(gray)
    bilinear = np.asarray(pil.resize((28, 28), Image.Resampling.BILINEAR))
    Image.fromarray(gray).save(tmp_path / "small.png")
    assert image_pixels(pil, invert="no").numpy().tolist() == bilinear.tolist()
    assert load_image(tmp_path / "small.png", invert="no").numpy().tolist() == bilinear.tolist()
    for other in (Image.Resampling.NEAREST, Image.Resampling.BICUBIC, Image.Resampling.BOX):
        assert np.asarray(pil.resize((28, 28), other)).tolist() != bilinear.tolist()  # the filter shows
    tensor = as_pixels(torch.from_numpy(gray.copy()), invert="no")[0].numpy().astype(int)
    assert np.abs(tensor - bilinear).max() <= 1


def test_a_2x2_picture_grows_to_28_as_bilinear_interpolation_between_its_pixel_centres() -> None:
    """By hand: the source pixels' centres fall at output 6.5 and 20.5, so the 7 outer rows and columns
    keep the corner's value, and between them output j takes 255 * (j - 6.5) / 14 of the way, rounded."""
    pixels = image_pixels(Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)), invert="no").numpy()
    assert pixels.shape == (28, 28)
    ramp = [0] * 7 + [round(255 * (j - 6.5) / 14) for j in range(7, 21)] + [255] * 7
    assert pixels[0].tolist() == ramp and pixels[:, 0].tolist() == ramp  # the first row and column
    assert pixels[:7, :7].tolist() == [[0] * 7] * 7 and pixels[:7, 21:].tolist() == [[255] * 7] * 7
    assert pixels[21:, :7].tolist() == [[255] * 7] * 7 and pixels[21:, 21:].tolist() == [[0] * 7] * 7
    assert (pixels == pixels[::-1, ::-1]).all()  # the picture's point symmetry


def test_palette_images_with_and_without_transparency(tmp_path: Path) -> None:
    indices = np.zeros((28, 28), dtype=np.uint8)
    indices[10:18, 10:18] = 1
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # 0: red, 1: blue
    expected = np.where(indices == 1, 29, 76)
    assert image_pixels(palette, invert="no").numpy().tolist() == expected.tolist()
    palette.save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png", invert="no").numpy().tolist() == expected.tolist()
    palette.info["transparency"] = 1  # transparent blue: white, the background alpha is composited on
    assert image_pixels(palette, invert="no").numpy().tolist() == np.where(indices == 1, 255, 76).tolist()
    palette.save(tmp_path / "transparent.png", transparency=1)
    assert load_image(tmp_path / "transparent.png", invert="no").numpy().tolist() == \
        np.where(indices == 1, 255, 76).tolist()


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    """Black at alpha 128 over white: 255 * (1 - 128/255) = 127; opaque keeps its colour, alpha 0 is white."""
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[:, :, 3] = 128
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red columns: 76
    rgba[:, -4:] = (0, 0, 255, 0)  # fully transparent blue: white
    expected = np.full((28, 28), 127)
    expected[:, :4], expected[:, -4:] = 76, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    for pixels in (image_pixels(Image.fromarray(rgba, mode="RGBA"), invert="no"),
                   load_image(tmp_path / "rgba.png", invert="no"), as_pixels(rgba.copy(), invert="no")[0]):
        assert pixels.numpy().tolist() == expected.tolist()


def test_16_bit_images_scale_65535_to_255(tmp_path: Path) -> None:
    """257 * k (k in 0..255) is k exactly in 8 bits: every level of a 16-bit picture lands on its own."""
    levels = np.arange(256)
    gray16 = (levels * 257).reshape(16, 16).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as image:
        assert image.mode == "I;16"  # the file really is 16-bit
    for pixels in (load_image(tmp_path / "gray16.png", invert="no", size=16),
                   image_pixels(Image.fromarray(gray16), invert="no", size=16)):
        assert pixels.numpy().reshape(-1).tolist() == levels.tolist()


def test_an_array_from_a_pil_image_is_taken_without_a_warning() -> None:
    """``np.asarray(pil_image)`` is read-only; a user passing it must not see PyTorch's warning about
    non-writable arrays (the README lists arrays among the inputs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = as_pixels(np.asarray(Image.fromarray(_framed(0))), invert="no")
    assert pixels[0].numpy().tolist() == _framed(0).tolist()


# --- the layouts, the values and the inversion, exactly -------------------------------------------

def test_an_image_with_no_pixels_is_refused_and_one_pixel_wide_is_not() -> None:
    for size in ((0, 5), (5, 0)):
        with pytest.raises(ImageError, match="^empty image$"):
            image_pixels(Image.new("L", size))
    for size in ((1, 5), (5, 1)):
        assert image_pixels(Image.new("L", size, 100), invert="no").tolist() == [[100] * 28] * 28


@pytest.mark.parametrize("shape, expected", [
    ((5, 6, 3), (1, 3)),  # (H, W, 3) with more than 4 rows: one RGB image
    ((5, 6, 4), (1, 4)),  # RGBA
    ((4, 6, 3), (4, 1)),  # 4 rows or fewer: gray images (N, H, W), 4 of 6x3
    ((2, 6, 6, 1), (2, 1)),  # (N, H, W, 1)
    ((2, 6, 6, 3), (2, 3)),
    ((2, 6, 6, 4), (2, 4)),
    ((5, 1, 6, 6), (5, 1)),
    ((6, 6, 6), (6, 1)),
])
def test_which_layout_a_shape_is_read_as(shape: tuple[int, ...], expected: tuple[int, int]) -> None:
    from convzoo.images import _batch_layout

    x = _batch_layout(torch.zeros(shape))
    assert tuple(x.shape[:2]) == expected and x.dim() == 4


@pytest.mark.parametrize("shape", [(3,), (1, 1, 6, 6, 3), (2, 6, 6, 2), (2, 2, 6, 6)])
def test_an_unknown_layout_is_named_exactly(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageError) as error:
        as_pixels(torch.zeros(shape))
    assert str(error.value) == (f"images of shape {shape}: expected (H, W), (C, H, W), (H, W, C), (N, H, W) or "
                                "(N, C, H, W) with 1 or 3 channels")


def test_three_rows_of_pictures_are_ambiguous_and_say_so() -> None:
    with pytest.raises(ImageError) as error:
        as_pixels(torch.zeros(3, 28, 28))
    assert str(error.value) == ("images of shape (3, 28, 28) are three gray images or one RGB image: give (3, 1, H, W) "
                                "for the first, (1, 3, H, W) or (H, W, 3) for the second")


def test_complex_numbers_are_refused() -> None:
    with pytest.raises(ImageError) as error:
        as_pixels(torch.zeros(1, 28, 28, dtype=torch.complex64))
    assert str(error.value) == "images must be real numbers, got torch.complex64"


def test_values_outside_the_range_are_cut_and_not_a_number_is_black() -> None:
    """Floats in [0, 1] are scaled by 255 (0.4 -> 102); NaN and infinities are 0 (so the rest still lies in [0, 1]);
    floats up to 2 are read as 0..255; integers below 0 are 0, above 255 are 255."""
    floats = torch.full((28, 28), 0.4)
    floats[0, :3] = torch.tensor([math.nan, math.inf, -math.inf])
    expected = np.full((28, 28), 102)
    expected[0, :3] = 0
    assert as_pixels(floats, invert="no")[0].numpy().tolist() == expected.tolist()
    assert as_pixels(torch.tensor([[2.0, 0.0], [1.5, 0.5]]), invert="no", size=2)[0].tolist() == [[2, 0], [2, 0]]
    integers = torch.tensor([[-20, 300], [10, 255]])
    assert as_pixels(integers, invert="no", size=2)[0].tolist() == [[0, 255], [10, 255]]
    red = torch.zeros(1, 3, 2, 2, dtype=torch.int64)
    red[:, 0] = 300  # 255 red: 76, not 0.299 * 300 = 90
    assert as_pixels(red, invert="no", size=2)[0].tolist() == [[76, 76], [76, 76]]


def test_a_bool_mask_is_0_or_255() -> None:
    mask = torch.tensor([[True, False], [False, True]])
    pixels = as_pixels(mask, invert="no", size=2)
    assert pixels.dtype == torch.uint8 and pixels[0].tolist() == [[255, 0], [0, 255]]


def test_nearly_transparent_is_nearly_white() -> None:
    """Black at alpha 1 over white: 255 * (1 - 1/255) = 254."""
    rgba = torch.zeros(5, 6, 4, dtype=torch.uint8)  # (H, W, 4): one RGBA image
    rgba[..., 3] = 1
    assert as_pixels(rgba, invert="no", size=2)[0].tolist() == [[254, 254], [254, 254]]


def test_each_image_of_a_batch_is_inverted_by_its_own_border() -> None:
    """Green (0, 255, 0) is luma 149.7, light: inverted to 105; 200 is inverted to 55; 0 and red (76) are kept."""
    gray = torch.tensor([200, 0, 0, 200], dtype=torch.uint8)[:, None, None].expand(4, 28, 28)
    assert as_pixels(gray)[:, 0, 0].tolist() == [55, 0, 0, 55]
    colours = torch.zeros(3, 3, 28, 28, dtype=torch.uint8)
    colours[0, 1] = 255  # green
    colours[2, 0] = 255  # red
    assert as_pixels(colours)[:, 0, 0].tolist() == [105, 0, 76]
