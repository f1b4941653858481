"""Classifying images with a run: files, folders and globs, the top-k classes, and images unlike Fashion-MNIST."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from convzoo.data import CLASSES, load_split
from convzoo.data.source import DEBIAN_DIR
from convzoo.images import ImageError, as_pixels
from convzoo.predict import REFERENCE, classify, find_images, image_statistics, unlike_training_data
from convzoo.rundir import load_run

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


def blank_page() -> torch.Tensor:
    """A white page, as a scanner or a camera would give it (inverted to black by ``as_pixels``)."""
    return as_pixels(torch.full((1, 120, 90), 250, dtype=torch.uint8))


# --- finding the images -----------------------------------------------------------------------

def _picture(path: Path) -> None:
    """A small real image at ``path`` (its format from the suffix); a folder's unreadable files are skipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        Image.new("L", (8, 8), 128).save(f, format="JPEG" if path.suffix == ".jpg" else "PNG")


def test_files_folders_and_globs(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", "c.PNG", "sub/d.png"):
        _picture(tmp_path / name)
    (tmp_path / "notes.txt").write_bytes(b"")
    assert find_images([tmp_path]) == [tmp_path / n for n in ("a.jpg", "b.png", "c.PNG")]  # images only, sorted
    assert find_images([f"{tmp_path}/*.png"]) == [tmp_path / "b.png"]
    assert find_images([f"{tmp_path}/**/*.png"]) == [tmp_path / "b.png", tmp_path / "sub" / "d.png"]
    assert find_images([tmp_path / "notes.txt", tmp_path / "b.png"]) == [tmp_path / "notes.txt", tmp_path / "b.png"]
    assert find_images([tmp_path / "missing.png"]) == [tmp_path / "missing.png"]  # load_image names it


@pytest.mark.parametrize("spec, message", [("empty", "a folder with no image files"),
                                           ("*.gif", "matches no image file")])
def test_a_folder_or_glob_without_images_is_an_error(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match=message):
        find_images([str(tmp_path / spec)])


# --- unlike the training data -----------------------------------------------------------------

def test_no_real_image_is_flagged() -> None:
    for split in ("train", "test"):
        images = load_split(split, SLICE)[0]
        assert unlike_training_data(images) == [None] * len(images), split


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="the full data set is not installed (make test installs it)")
def test_no_image_of_the_full_test_split_is_flagged() -> None:
    images = load_split("test")[0]
    assert sum(reason is not None for reason in unlike_training_data(images)) == 0


def test_blank_pages_noise_and_specks_are_flagged() -> None:
    dot = torch.zeros(1, 28, 28, dtype=torch.uint8)
    dot[0, 13:15, 13:15] = 255
    cases = {
        "blank": blank_page(),
        "blank ": torch.zeros(1, 28, 28, dtype=torch.uint8),  # a black page
        "noise-like": torch.randint(0, 256, (1, 28, 28), generator=torch.Generator().manual_seed(0)).to(torch.uint8),
        "almost empty": dot,
        "the background is not dark": 255 - load_split("test", SLICE)[0][:1],  # dark on light, not inverted
    }
    for start, pixels in cases.items():
        (reason,) = unlike_training_data(pixels)
        assert reason is not None and reason.startswith(start.strip()), (start, reason)


def test_statistics_are_those_the_ranges_describe() -> None:
    stats = image_statistics(load_split("test", SLICE)[0])
    assert set(stats) == set(REFERENCE)
    for name, (low, high) in REFERENCE.items():
        assert low <= float(stats[name].min()) and float(stats[name].max()) <= high, name


# --- classifying --------------------------------------------------------------------------------

def test_classify_gives_the_top_k_classes_most_probable_first(tiny_run: Path) -> None:
    config, model, device = load_run(tiny_run, "cpu")
    images = load_split("test", SLICE)[0][:8]
    predictions = classify(model, config, torch.cat([images, blank_page()]), device, top_k=3)
    assert [p.image for p in predictions] == [f"image {i}" for i in range(9)]
    for p in predictions:
        labels, probs = zip(*p.top_labels)
        assert len(set(labels)) == 3 and list(probs) == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert p.class_name == CLASSES[p.label] and p.probability == probs[0]
        assert p.top == [(CLASSES[label], prob) for label, prob in p.top_labels]
    with torch.no_grad():
        expected = model(images[:, None].float() / 255).argmax(1)
    assert [p.label for p in predictions[:8]] == expected.tolist()
    assert [p.unlike_training_data is None for p in predictions] == [True] * 8 + [False]
    with pytest.raises(ValueError, match="--top-k must be between 1 and 10"):
        classify(model, config, images, device, top_k=11)


def test_cli_predicts_a_folder_and_a_glob_with_top_k(tiny_run: Path, tmp_path: Path,
                                                     run_cli: Callable[..., tuple[int, str, str]]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(load_split("test", SLICE)[0][:3]):
        Image.fromarray(image.numpy()).save(folder / f"item{i}.png")
    Image.new("L", (200, 150), 255).save(folder / "blank.jpg")  # a white page
    code, out, err = run_cli("predict", str(tiny_run), str(folder), "--top-k", "2", "--json")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [Path(r["image"]).name for r in rows] == ["blank.jpg", "item0.png", "item1.png", "item2.png"]
    assert all(len(r["top_k"]) == 2 and r["top_k"][0]["class"] == r["class"] for r in rows)
    assert [r["unlike_training_data"] for r in rows] == [True, False, False, False]
    assert rows[0]["why"].startswith("blank")

    code, out, err = run_cli("predict", str(tiny_run), f"{folder}/item*.png", "--top-k", "3")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 3 and all(line.count("%") == 3 for line in lines)

    code, out, err = run_cli("predict", str(tiny_run), str(folder / "blank.jpg"))
    assert code == 0 and "unlike the training data: blank" in out


@pytest.mark.parametrize("args, message", [
    (["{d}/nothing.png"], "nothing.png: no such file"),
    (["{d}/*.png"], "matches no image file"),
    (["{d}/x.png", "--top-k", "0"], "--top-k must be between 1 and 10, got 0"),
])
def test_cli_errors_are_one_line(tiny_run: Path, tmp_path: Path, args: list[str], message: str,
                                 run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = run_cli("predict", str(tiny_run), *(a.format(d=tmp_path) for a in args))
    assert code == 2 and out == "" and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


# --- walking a user's tree -----------------------------------------------------------------------

def test_a_glob_through_a_symlink_loop_predicts_each_image_once(tiny_run: Path, tmp_path: Path,
                                                               run_cli: Callable[..., tuple[int, str, str]]) -> None:
    """``**`` never enters a directory through a link (a loop back to the top, a link beside the real folder),
    and a file reached by several names (a link to it, a hard link) is predicted once."""
    top = tmp_path / "photos"
    for name in ("a.png", "sub/b.png", "sub/deeper/c.png"):
        _picture(top / name)
    (top / "sub" / "deeper" / "loop").symlink_to(top, target_is_directory=True)
    (top / "again").symlink_to(top / "sub", target_is_directory=True)
    (top / "link.png").symlink_to(top / "a.png")
    os.link(top / "sub" / "b.png", top / "hard.png")
    code, out, err = run_cli("predict", str(tiny_run), f"{top}/**/*.png", str(top), "--json")
    assert (code, err) == (0, "")
    assert sorted(Path(row["image"]).relative_to(top).as_posix() for row in json.loads(out)) == [
        "a.png", "hard.png", "sub/deeper/c.png"]  # b.png is hard.png, link.png is a.png: each file once


def test_a_folders_unreadable_files_are_skipped_with_one_warning(tiny_run: Path, tmp_path: Path,
                                                                run_cli: Callable[..., tuple[int, str, str]]) -> None:
    folder = tmp_path / "mixed"
    _picture(folder / "good.png")
    Image.new("L", (8, 8), 128).save(folder / "scan.pgm")  # a suffix listed, a format convzoo does not decode
    (folder / "cut.png").write_bytes((folder / "good.png").read_bytes()[:40])  # truncated
    code, out, err = run_cli("predict", str(tiny_run), str(folder))
    assert code == 0 and len(out.splitlines()) == 1 and out.startswith(f"{folder / 'good.png'}: ")
    assert err.startswith("warning: skipped 2 files convzoo cannot read: ") and err.count("\n") == 1
    assert "cut.png" in err and "scan.pgm" in err
    code, out, err = run_cli("predict", str(tiny_run), str(folder / "scan.pgm"))  # named outright: an error
    assert code == 2 and out == "" and err.startswith("error: ") and "scan.pgm" in err


def test_the_number_of_files_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _picture(tmp_path / name)
    monkeypatch.setattr("convzoo.predict.MAX_IMAGES", 2)
    with pytest.raises(ImageError, match="more than 2 image files: name fewer"):
        find_images([tmp_path])


def test_a_file_name_reaches_the_terminal_escaped(tiny_run: Path, tmp_path: Path,
                                                  run_cli: Callable[..., tuple[int, str, str]]) -> None:
    _picture(tmp_path / "\x1b]0;owned\x07\x1b[2Jshoe.png")
    code, out, err = run_cli("predict", str(tiny_run), str(tmp_path))
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07\\x1b[2Jshoe.png: " in out


# --- the top classes and their probabilities, by hand ------------------------------------------

class _LogitsPerImage(torch.nn.Module):
    """A stub network: image i (every pixel i) gets the logits ``table[i]``."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * 255).round().long()]


SPREAD = [1.0, 3.0, -2.0, 0.5, 2.0, 0.0, -1.0, 4.0, 1.5, -0.5]  # most probable: 7, 1, 4, 8, 0, 3, 5, 9, 6, 2
TIED = [0.0, 0.0, 0.0, 2.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0]  # 3 and 5 tie for the top, then 8


def _softmax(logits: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in logits)
    return [math.exp(v) / total for v in logits]


def _classify(top_k: int, names: list[str] | None = None) -> list:
    from convzoo.config import recipe

    pixels = torch.stack([torch.full((28, 28), i, dtype=torch.uint8) for i in range(2)])
    config = recipe("lenet", device="cpu")
    return classify(_LogitsPerImage([SPREAD, TIED]), config, pixels, torch.device("cpu"), names=names, top_k=top_k)


def test_top_k_order_and_probabilities_are_the_softmax_by_hand() -> None:
    spread, tied = _classify(3, names=["shoe.png", "shirt.png"])
    p = _softmax(SPREAD)
    assert spread.image == "shoe.png" and [label for label, _ in spread.top_labels] == [7, 1, 4]
    assert [prob for _, prob in spread.top_labels] == pytest.approx([p[7], p[1], p[4]], rel=1e-6)
    assert (spread.label, spread.class_name, spread.probability) == (7, CLASSES[7], pytest.approx(p[7], rel=1e-6))
    # One flat tone: the stub's images are also flagged as unlike the training data.
    assert spread.format() == (f"shoe.png: Sneaker {p[7]:.1%} (Trouser {p[1]:.1%}, Coat {p[4]:.1%})"
                               "  [unlike the training data: blank: one flat tone, no object]")
    q = _softmax(TIED)
    assert tied.image == "shirt.png"
    # a tie: both first, either order
    assert {label for label, _ in tied.top_labels[:2]} == {3, 5} and tied.top_labels[2][0] == 8
    assert [prob for _, prob in tied.top_labels] == pytest.approx([q[3], q[5], q[8]], rel=1e-6)


def test_top_1_and_top_10() -> None:
    spread, tied = _classify(1)
    assert (spread.image, tied.image) == ("image 0", "image 1")  # the default names
    assert spread.top_labels == [(7, pytest.approx(_softmax(SPREAD)[7], rel=1e-6))] and len(tied.top_labels) == 1
    assert tied.label in (3, 5)
    spread, _ = _classify(10)
    p = _softmax(SPREAD)
    # every class, most probable first
    assert [label for label, _ in spread.top_labels] == [7, 1, 4, 8, 0, 3, 5, 9, 6, 2]
    assert [prob for _, prob in spread.top_labels] == pytest.approx([p[k] for k in (7, 1, 4, 8, 0, 3, 5, 9, 6, 2)],
                                                                    rel=1e-6)
    assert sum(prob for _, prob in spread.top_labels) == pytest.approx(1.0, rel=1e-6)
    assert spread.to_json()["top_k"][0] == {"class": "Sneaker", "label": 7, "probability": round(p[7], 4)}


@pytest.mark.parametrize("top_k", [0, 11, -1])
def test_a_top_k_outside_1_to_10_is_refused(top_k: int) -> None:
    with pytest.raises(ValueError, match="top.k must be between 1 and 10"):
        _classify(top_k)
