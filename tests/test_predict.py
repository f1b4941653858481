"""Classifying images with a run: files, folders and globs, the top-k classes, and images unlike Fashion-MNIST."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from convzoo.data import CLASSES, load_split
from convzoo.data.source import DEBIAN_DIR
from convzoo.images import ImageError, as_pixels
from convzoo.predict import REFERENCE, Prediction, classify, find_images, image_statistics, unlike_training_data
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


# --- what a prediction shows ---------------------------------------------------------------------

def test_a_prediction_as_a_line_and_as_json() -> None:
    p = Prediction("shoe.png", [(7, 0.91234), (5, 0.05111), (9, 0.02)])
    assert (p.label, p.class_name, p.probability) == (7, "Sneaker", 0.91234)
    assert p.top == [("Sneaker", 0.91234), ("Sandal", 0.05111), ("Ankle boot", 0.02)]
    assert p.format() == "shoe.png: Sneaker 91.2% (Sandal 5.1%, Ankle boot 2.0%)"
    assert p.to_json() == {
        "image": "shoe.png", "class": "Sneaker", "label": 7, "probability": 0.9123,
        "top_k": [{"class": "Sneaker", "label": 7, "probability": 0.9123},
                  {"class": "Sandal", "label": 5, "probability": 0.0511},
                  {"class": "Ankle boot", "label": 9, "probability": 0.02}],
        "unlike_training_data": False, "why": None}
    assert "classes" not in repr(p)  # the run's class names are not repeated in every repr


def test_a_prediction_of_a_run_with_its_own_classes_and_a_warning() -> None:
    p = Prediction("image 0", [(1, 0.75), (0, 0.25)], "blank: one flat tone, no object", ("cat\x07", "dog\x1b[2J"))
    assert p.format() == ("image 0: dog\\x1b[2J 75.0% (cat\\x07 25.0%)"
                          "  [unlike the training data: blank: one flat tone, no object]")
    assert p.to_json() == {
        "image": "image 0", "class": "dog\x1b[2J", "label": 1, "probability": 0.75,
        "top_k": [{"class": "dog\x1b[2J", "label": 1, "probability": 0.75},
                  {"class": "cat\x07", "label": 0, "probability": 0.25}],
        "unlike_training_data": True, "why": "blank: one flat tone, no object"}
    assert Prediction("x.png", [(2, 1.0)]).format() == "x.png: Pullover 100.0%"  # top 1: no parentheses


# --- finding the images, exactly ---------------------------------------------------------------

NOT_READ = "not an image convzoo reads (PNG, JPEG, BMP, GIF, TIFF, WEBP)"
SUFFIXES = ".bmp, .gif, .jpeg, .jpg, .pbm, .pgm, .png, .pnm, .ppm, .tif, .tiff, .webp"


@pytest.mark.parametrize("bad, shown", [
    (1, "skipped 1 file convzoo cannot read: {d}/bad0.png: {why}"),
    (5, "skipped 5 files convzoo cannot read: " + "; ".join(f"{{d}}/bad{i}.png: {{why}}" for i in range(5))),
    (7, "skipped 7 files convzoo cannot read: " + "; ".join(f"{{d}}/bad{i}.png: {{why}}" for i in range(5))
        + "; and 2 more"),
])
def test_the_files_a_folder_cannot_give_are_named_in_one_warning(tmp_path: Path, bad: int, shown: str) -> None:
    _picture(tmp_path / "good.png")
    for i in range(bad):
        (tmp_path / f"bad{i}.png").write_bytes(b"no picture")
    warnings: list[str] = []
    assert find_images([tmp_path], warn=warnings.append) == [tmp_path / "good.png"]
    assert warnings == [shown.format(d=tmp_path, why=NOT_READ)]
    warnings.clear()
    assert find_images([f"{tmp_path}/*.png"], warn=warnings.append) == [tmp_path / "good.png"]
    assert warnings == [shown.format(d=tmp_path, why=NOT_READ)]


def test_the_warning_goes_to_stderr_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _picture(tmp_path / "good.png")
    (tmp_path / "\x1b[2Jbad.png").write_bytes(b"no picture")
    assert find_images([tmp_path]) == [tmp_path / "good.png"]
    out, err = capsys.readouterr()
    assert out == "" and err == f"warning: skipped 1 file convzoo cannot read: {tmp_path}/\\x1b[2Jbad.png: {NOT_READ}\n"


def test_a_folder_or_glob_of_unreadable_files_names_the_last(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"no picture")
    (tmp_path / "notes.txt").write_bytes(b"")
    with pytest.raises(ImageError) as error:
        find_images([str(tmp_path)])
    assert str(error.value) == (f"{tmp_path}: a folder with no image file convzoo can read "
                                f"({tmp_path}/b.png: {NOT_READ})")
    with pytest.raises(ImageError) as error:
        find_images([f"{tmp_path}/*"])
    assert str(error.value) == f"{tmp_path}/*: matches no image file convzoo can read ({tmp_path}/b.png: {NOT_READ})"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError) as error:
        find_images([tmp_path / "empty"])
    assert str(error.value) == f"{tmp_path}/empty: a folder with no image files ({SUFFIXES})"
    with pytest.raises(ImageError) as error:
        find_images([f"{tmp_path}/*.txt"])
    assert str(error.value) == f"{tmp_path}/*.txt: matches no image file"


def test_a_glob_takes_files_only_and_a_name_that_exists_is_not_a_pattern(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()  # a directory with an image's name
    _picture(tmp_path / "shoe[1].png")  # a real file whose name is also a pattern
    _picture(tmp_path / "shoe1.png")
    with pytest.raises(ImageError, match="matches no image file"):
        find_images([f"{tmp_path}/folder*"])
    assert find_images([tmp_path / "shoe[1].png"]) == [tmp_path / "shoe[1].png"]
    assert find_images([f"{tmp_path}/shoe[1].png"]) == [tmp_path / "shoe[1].png"]
    assert find_images([f"{tmp_path}/shoe[0-9].png"]) == [tmp_path / "shoe1.png"]


def test_each_file_once_and_missing_names_kept(tmp_path: Path) -> None:
    _picture(tmp_path / "a.png")
    _picture(tmp_path / "b.png")
    specs = [tmp_path / "a.png", tmp_path, f"{tmp_path}/*.png", str(tmp_path / "b.png")]
    assert find_images(specs) == [tmp_path / "a.png", tmp_path / "b.png"]
    missing = tmp_path / "missing.png"
    assert find_images([missing, missing]) == [missing, missing]  # load_image names each


def test_the_bound_on_files_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("convzoo.predict.MAX_IMAGES", 1000)
    names = [tmp_path / f"{i}.png" for i in range(1001)]  # named outright: kept without being read
    assert len(find_images(names[:1000])) == 1000
    with pytest.raises(ImageError) as error:
        find_images(names)
    assert str(error.value) == "more than 1,000 image files: name fewer files, folders or globs"


def test_a_relative_glob_and_a_glob_inside_a_file(own_cwd: Path) -> None:
    _picture(own_cwd / "a.png")
    _picture(own_cwd / "sub" / "b.png")
    assert find_images(["*.png"]) == [Path("a.png")]
    assert find_images(["**/*.png"]) == [Path("a.png"), Path("sub/b.png")]
    assert find_images(["s?b/*.png"]) == [Path("sub/b.png")]
    with pytest.raises(ImageError, match="matches no image file"):
        find_images(["a.png/*.png"])  # a file is no folder to look in
    with pytest.raises(ImageError, match="matches no image file"):
        find_images(["missing/**/*.png"])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tree of images without links, hidden files and folders included."""
    for name in ("a.png", ".hidden.png", "sub/b.png", "sub/.c.png", "sub/deep/d.png", "sub/.secret/e.png",
                 ".cache/f.png", "other/g.jpg"):
        _picture(tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("pattern", ["**", "**/*.png", "*", "*/*", ".*", "**/.*", "*/.*", "sub/**", "sub/**/*.png",
                                     ".cache/*", "**/.secret/*", "**/deep", "[ab].png", "a.png", "missing/*",
                                     "a.png/*", "*/deep/*.png", "**/**/*.png"])
def test_glob_matches_as_pythons_glob_without_links(tree: Path, pattern: str) -> None:
    import glob

    from convzoo.predict import _glob

    expected = {Path(p) for p in glob.glob(f"{tree}/{pattern}", recursive=True)}
    assert set(_glob(f"{tree}/{pattern}")) == expected


def test_a_folder_that_cannot_be_listed_is_passed_over(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As glob: a folder below that cannot be read (permissions; the tests run as root, so it is faked) gives
    nothing, and the folders after it are still searched."""
    scandir = os.scandir

    def refusing(path: object) -> object:
        if Path(path) == tree / "other":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    assert find_images([f"{tree}/**/*.png"]) == [tree / "a.png", tree / "sub" / "b.png",
                                                 tree / "sub" / "deep" / "d.png"]
    assert find_images([f"{tree}/*/*.png"]) == [tree / "sub" / "b.png"]


def test_a_trailing_double_star_leaves_hidden_files_out(tree: Path) -> None:
    assert find_images([f"{tree}/**"]) == [tree / "a.png", tree / "other" / "g.jpg", tree / "sub" / "b.png",
                                             tree / "sub" / "deep" / "d.png"]


# --- unlike the training data, by hand ---------------------------------------------------------

def _image(rows: list[tuple[slice, slice, int]], background: int = 0) -> torch.Tensor:
    """28x28 uint8 pixels: ``background`` with each ``(rows, columns, value)`` painted on, as a batch of one."""
    pixels = torch.full((1, 28, 28), background, dtype=torch.uint8)
    for r, c, value in rows:
        pixels[0, r, c] = value
    return pixels


def test_the_statistics_of_a_hand_made_image() -> None:
    """Row 1 white, the rest black: std sqrt(p (1 - p)) with p = 1/28; ink 1/28; border: 28 of the top two rows'
    56 pixels, 2 of each side pair's 56, none of the bottom's: 32 / 224; neighbours differ only vertically, across
    2 of the 27 row gaps: roughness (2/27) / std."""
    stats = image_statistics(_image([(1, slice(None), 255)]))
    std = math.sqrt(27) / 28
    assert float(stats["std"]) == pytest.approx(std, rel=1e-6)
    assert float(stats["ink"]) == pytest.approx(1 / 28, rel=1e-6)
    assert float(stats["border"]) == pytest.approx(32 / 224, rel=1e-6)
    assert float(stats["roughness"]) == pytest.approx(2 / 27 / std, rel=1e-6)
    stats = image_statistics(_image([(slice(None), 1, 255)]))  # column 1 white: the transposed picture
    assert float(stats["border"]) == pytest.approx(32 / 224, rel=1e-6)
    assert float(stats["roughness"]) == pytest.approx(2 / 27 / std, rel=1e-6)
    stats = image_statistics(_image([(slice(None), -2, 255)]))  # column 26 white: 28 of the right pair's 56, 2 + 2
    assert float(stats["border"]) == pytest.approx(32 / 224, rel=1e-6)
    stats = image_statistics(_image([(-2, slice(None), 255)]))
    assert float(stats["border"]) == pytest.approx(32 / 224, rel=1e-6)
    blank = image_statistics(torch.full((2, 28, 28), 90, dtype=torch.uint8))
    assert blank["std"].tolist() == [0.0, 0.0] and blank["roughness"].tolist() == [0.0, 0.0]


def test_each_reason_with_its_number() -> None:
    checker = ((torch.arange(28)[:, None] + torch.arange(28)) % 2 * 255).to(torch.uint8)[None]
    cases = [
        # one tone
        (_image([], background=90), "blank: one flat tone, no object"),
        # 4 of 784 pixels: 0.5%
        (_image([(slice(13, 15), slice(13, 15), 255)]), "almost empty: the object covers 0.5% of the frame "
                                                        "(training images: at least 3.8%)"),
        # 0.2 everywhere, 20 black pixels on the top row: 764 of 784 bright, 97.4%
        (_image([(slice(7, 21), slice(7, 21), 255), (0, slice(0, 20), 0)], background=51),
         "the frame is filled: 97.4% of it is bright (training images: at most 91%)"),
        # a dark square on 200: border 200 / 255
        (_image([(slice(7, 21), slice(7, 21), 0)], background=200),
         "the background is not dark (border mean 0.78; a dark object on light needs inverting)"),
        # std 0.5, every neighbour differs by 1 both ways: 2 / 0.5
        (checker, "noise-like: neighbouring pixels differ 4.0x the contrast (training images: at most 1.8x)"),
    ]
    assert unlike_training_data(torch.cat([pixels for pixels, _ in cases])) == [why for _, why in cases]


def test_roughness_at_the_top_of_its_range_is_not_flagged() -> None:
    """Alternate black and white columns: std 0.5, each horizontal neighbour differs by 1, no vertical one:
    roughness exactly 2.0, the range's upper end (and ink, border 0.5)."""
    stripes = _image([(slice(None), slice(1, None, 2), 255)])
    assert float(image_statistics(stripes)["roughness"]) == 2.0
    assert unlike_training_data(stripes) == [None]


# --- scoring as the run evaluated ----------------------------------------------------------------

class _Recorder(torch.nn.Module):
    """A stub network that notes what it was given; its logits are the first row's first ``classes`` pixels
    times 10 (so a mirror image, read from the other end, gives other logits)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.classes = classes
        self.calls: list[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((tuple(x.shape), self.training, x.is_contiguous(memory_format=torch.channels_last),
                           torch.is_autocast_enabled("cpu")))
        return x[:, 0, 0, : self.classes] * 10


def _ramps(n: int, channels: int = 3, side: int = 28) -> torch.Tensor:
    """``n`` uint8 images whose first row runs 0, 25, 50, ... (image i shifted by i), every channel alike."""
    row = (torch.arange(side)[None] * 25 + torch.arange(n)[:, None]).clamp(max=255).to(torch.uint8)
    return row[:, None, None, :].expand(n, channels, side, side).contiguous()


def test_probabilities_are_scored_in_evaluation_batches_and_mode() -> None:
    from convzoo.config import recipe
    from convzoo.predict import probabilities

    model = _Recorder().train()
    pixels = _ramps(5)
    config = recipe("lenet", device="cpu", eval_batch_size=2, channels_last=True)
    p = probabilities(model, config, pixels, torch.device("cpu"))
    assert model.training  # left in the mode it was found in
    assert [c[:3] for c in model.calls] == [((2, 3, 28, 28), False, True)] * 2 + [((1, 3, 28, 28), False, True)]
    logits = pixels[:, 0, 0, :10].float() / 255 * 10
    torch.testing.assert_close(p, torch.softmax(logits, dim=1))
    model.eval()
    probabilities(model, recipe("lenet", device="cpu", channels_last=False, input_size=32), pixels,
                  torch.device("cpu"))
    assert not model.training and model.calls[3:] == [((5, 3, 32, 32), False, False, False)]


def test_probabilities_with_tta_and_autocast() -> None:
    from convzoo.config import recipe
    from convzoo.predict import probabilities

    model = _Recorder()
    pixels = _ramps(2)
    p = probabilities(model, recipe("lenet", device="cpu", tta=True, amp=True), pixels, torch.device("cpu"))
    x = pixels[:, 0, 0].float() / 255 * 10
    torch.testing.assert_close(p, torch.softmax((x[:, :10] + x.flip(-1)[:, :10]) / 2, dim=1), atol=0.02, rtol=0)
    assert p.dtype == torch.float32 and [c[3] for c in model.calls] == [True, True]


def test_top_k_is_checked_against_the_runs_classes() -> None:
    from convzoo.errors import ConfigError
    from convzoo.predict import check_top_k

    check_top_k(10)
    check_top_k(1, 1)
    for top_k, most, message in ((11, None, "--top-k must be between 1 and 10, got 11"),
                                 (0, 1000, "--top-k must be between 1 and 1,000, got 0"),
                                 (3, 2, "--top-k must be between 1 and 2, got 3")):
        with pytest.raises(ConfigError) as error:
            check_top_k(top_k) if most is None else check_top_k(top_k, most)
        assert (str(error.value), error.value.field) == (message, "top_k")


def test_classify_names_defaults_and_which_images_are_judged() -> None:
    from convzoo.config import recipe

    config, cpu = recipe("lenet", device="cpu"), torch.device("cpu")
    blank = torch.zeros(2, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="^3 names for 2 images$"):
        classify(_Recorder(), config, blank, cpu, names=["a", "b", "c"])
    (p, _) = classify(_Recorder(), config, blank, cpu)
    assert len(p.top_labels) == 3 and p.unlike_training_data == "blank: one flat tone, no object"
    assert p.classes == tuple(CLASSES)
    (p, _) = classify(_Recorder(2), config, blank, cpu, classes=["cat", "dog"])
    assert len(p.top_labels) == 2 and p.classes == ("cat", "dog")  # top 3 of 2 classes: both
    with pytest.raises(ValueError, match="^--top-k must be between 1 and 2, got 3$"):
        classify(_Recorder(2), config, blank, cpu, classes=["cat", "dog"], top_k=3)
    assert [q.unlike_training_data for q in classify(_Recorder(), config, blank, cpu, check_unlike=False)] == [None] * 2
    gray = classify(_Recorder(), config, blank[:, None], cpu)  # (N, 1, H, W): judged as gray
    assert [q.unlike_training_data for q in gray] == ["blank: one flat tone, no object"] * 2
    colour = classify(_Recorder(), config, blank[:, None].expand(-1, 3, -1, -1), cpu)  # colour: never judged
    assert [q.unlike_training_data for q in colour] == [None] * 2


# --- reading images as the run's data was ------------------------------------------------------

FOLDER_GRAY = {"data": "/shoes", "classes": ["boot", "sandal"], "channels": 1, "size": 8, "split": {"rule": "folders"}}
COLOUR = {"data": "cifar-10", "classes": [f"class {i}" for i in range(10)], "channels": 3, "size": 8,
          "split": {"rule": "official"}}


@pytest.mark.parametrize("data, folder", [
    ({"split": {"rule": "folders"}}, True),
    ({"split": {"rule": "stratified"}}, True),
    ({"split": {"rule": "official"}, "channels": 3}, True),
    ({"split": {"rule": "official"}, "channels": 1}, False),
    ({"split": {"rule": "idx"}}, False),
    ({"channels": 1}, False),
    ({"channels": 3}, True),
])
def test_which_runs_read_images_as_a_folder(data: dict, folder: bool) -> None:
    from convzoo.predict import reads_as_folder

    assert reads_as_folder(data) is folder


def test_a_gray_idx_run_reads_gray_light_on_dark_of_its_size() -> None:
    from convzoo.predict import read_pixels

    mnist = {"data": "mnist", "channels": 1, "size": 14, "split": {"rule": "official"}}
    page = torch.full((20, 20), 200, dtype=torch.uint8)
    assert torch.equal(read_pixels(page, mnist), torch.full((1, 14, 14), 55, dtype=torch.uint8))  # inverted
    assert torch.equal(read_pixels(page, mnist, invert="no"), torch.full((1, 14, 14), 200, dtype=torch.uint8))


def test_a_folder_run_reads_its_files_as_they_are(tmp_path: Path) -> None:
    from convzoo.errors import ConfigError
    from convzoo.predict import read_pixels

    Image.new("L", (16, 16), 200).save(tmp_path / "light.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.png")
    for item in (tmp_path / "light.png", str(tmp_path / "light.png")):
        assert torch.equal(read_pixels(item, FOLDER_GRAY), torch.full((1, 1, 8, 8), 200, dtype=torch.uint8))
    assert torch.equal(read_pixels(tmp_path / "light.png", FOLDER_GRAY, invert="yes"),
                       torch.full((1, 1, 8, 8), 55, dtype=torch.uint8))
    assert torch.equal(read_pixels(tmp_path / "light.png", FOLDER_GRAY, invert="no"),
                       torch.full((1, 1, 8, 8), 200, dtype=torch.uint8))
    assert torch.equal(read_pixels(tmp_path / "red.png", FOLDER_GRAY), torch.full((1, 1, 8, 8), 76, dtype=torch.uint8))
    red = torch.tensor([255, 0, 0], dtype=torch.uint8)[None, :, None, None].expand(1, 3, 8, 8)
    assert torch.equal(read_pixels(tmp_path / "red.png", COLOUR), red)
    # a tensor or PIL image for a gray folder run: gray, resized, never inverted
    assert torch.equal(read_pixels(torch.full((2, 4, 4), 200, dtype=torch.uint8), FOLDER_GRAY),
                       torch.full((2, 1, 8, 8), 200, dtype=torch.uint8))
    assert torch.equal(read_pixels(Image.new("L", (4, 4), 200), FOLDER_GRAY, invert="yes"),
                       torch.full((1, 1, 8, 8), 55, dtype=torch.uint8))
    with pytest.raises(ImageError) as error:
        read_pixels(tmp_path / "missing.png", FOLDER_GRAY)
    assert str(error.value) == f"{tmp_path}/missing.png: no such file"
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageError, match="folder.png: no such file"):
        read_pixels(str(tmp_path / "folder.png"), COLOUR)
    with pytest.raises(ConfigError) as error:
        read_pixels(tmp_path / "light.png", COLOUR, invert="maybe")
    assert (str(error.value), error.value.field) == ("--invert must be auto, yes or no, got 'maybe'", "invert")


def test_a_colour_run_takes_pil_images_tensors_and_arrays() -> None:
    from convzoo.predict import read_pixels

    rgb = torch.tensor([10, 20, 30], dtype=torch.uint8)[:, None, None].expand(3, 8, 8).contiguous()
    assert torch.equal(read_pixels(Image.new("RGB", (8, 8), (10, 20, 30)), COLOUR), rgb[None])
    assert torch.equal(read_pixels(Image.new("L", (8, 8), 40), COLOUR), torch.full((1, 3, 8, 8), 40, dtype=torch.uint8))
    assert torch.equal(read_pixels(rgb, COLOUR), rgb[None])
    assert torch.equal(read_pixels(rgb.numpy()[:, :, ::-1], COLOUR), rgb[None])  # a strided array
    assert torch.equal(read_pixels(rgb[:, :1, :3], COLOUR), rgb[None])  # one pixel high: still an image
    assert torch.equal(read_pixels(rgb[:, :3, :1], COLOUR), rgb[None])
    batch = torch.stack([rgb, 255 - rgb])
    assert torch.equal(read_pixels(batch, COLOUR), batch)
    assert torch.equal(read_pixels(batch, COLOUR, invert="yes"), 255 - batch)


@pytest.mark.parametrize("item, got", [
    (torch.zeros(3, 8, 8), "(3, 8, 8)"),  # float
    (torch.zeros(8, 8, dtype=torch.uint8), "(8, 8)"),
    (torch.zeros(1, 1, 3, 8, 8, dtype=torch.uint8), "(1, 1, 3, 8, 8)"),
    (torch.zeros(1, 8, 8, dtype=torch.uint8), "(1, 8, 8)"),
    (torch.zeros(2, 4, 8, 8, dtype=torch.uint8), "(2, 4, 8, 8)"),
    (torch.zeros(3, 0, 8, dtype=torch.uint8), "(3, 0, 8)"),
    (torch.zeros(3, 8, 0, dtype=torch.uint8), "(3, 8, 0)"),
    ([1, 2], "list"),
])
def test_what_a_colour_run_cannot_take_is_named(item: object, got: str) -> None:
    from convzoo.predict import read_pixels

    with pytest.raises(ImageError) as error:
        read_pixels(item, COLOUR)
    assert str(error.value) == ("a run on colour images takes files, PIL images or uint8 (3, H, W) or (N, 3, H, W) "
                                f"tensors, got {got}")


def test_a_colour_image_is_resized_bilinearly_and_antialiased() -> None:
    from convzoo.predict import read_pixels

    # 2x2 -> 8: the source pixels' centres fall at outputs 1.5 and 5.5; between, output j is (j - 1.5) / 4 of the way
    small = torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8).expand(3, 2, 2)
    ramp = [0, 0, 32, 96, 159, 223, 255, 255]  # 255 * (j - 1.5) / 4 rounded: 31.9, 95.6, 159.4, 223.1
    assert read_pixels(small, COLOUR)[0, 1, 0].tolist() == ramp and read_pixels(small, COLOUR).dtype == torch.uint8
    assert read_pixels(small, COLOUR)[0, 2, :, 0].tolist() == ramp
    # columns 255, 0, 0, 0, ... shrunk 4 times: a triangle of half-width 4 around 4j + 2 weighs 4j and 4j + 4
    # 0.625 and 0.375 of 4, a quarter; at the edges the weights that fall outside are dropped (3.5 in all)
    stripes = torch.tensor([255, 0, 0, 0] * 8, dtype=torch.uint8).expand(3, 32, 32)
    assert read_pixels(stripes, COLOUR)[0, 0, 3].tolist() == [73, 64, 64, 64, 64, 64, 64, 46]  # 255/3.5, 255*.625/3.5


# --- predict_images: whatever a user has, in order ------------------------------------------------

class _FirstPixel(torch.nn.Module):
    """A stub network: an image whose first pixel is v gets logit 4 for class v % classes, 0 for the others."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = (x[:, 0, 0, 0] * 255).round().long()
        return 4.0 * F.one_hot(first % self.classes, self.classes).float()


def _predict(images: object, **kwargs: object) -> list:
    from convzoo.config import recipe
    from convzoo.predict import predict_images

    classes = len(kwargs["data"]["classes"]) if kwargs.get("data") else 10
    return predict_images(_FirstPixel(classes), recipe("lenet", device="cpu"), torch.device("cpu"), images, **kwargs)


def _flat(value: int, side: int = 28) -> torch.Tensor:
    return torch.full((side, side), value, dtype=torch.uint8)


def test_predict_images_takes_paths_folders_tensors_and_pil_images_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for value, name in ((3, "b.png"), (4, "a.png")):
        Image.fromarray(_flat(value).numpy()).save(folder / name)
    Image.fromarray(_flat(2).numpy()).save(tmp_path / "one.png")
    items = [tmp_path / "one.png", str(folder), torch.stack([_flat(5), _flat(6)]), Image.fromarray(_flat(7).numpy()),
             folder, f"{folder}/b*.png"]
    predictions = _predict(items, invert="no")
    assert [(p.image, p.label) for p in predictions] == [
        (str(tmp_path / "one.png"), 2), (str(folder / "a.png"), 4), (str(folder / "b.png"), 3), ("image 3", 5),
        ("image 4", 6), ("image 5", 7), (str(folder / "a.png"), 4), (str(folder / "b.png"), 3),
        (str(folder / "b.png"), 3)]
    top = math.exp(4) / (math.exp(4) + 9)
    assert all(p.probability == pytest.approx(top, rel=1e-6) and len(p.top_labels) == 3 for p in predictions)
    assert all(p.unlike_training_data == "blank: one flat tone, no object" for p in predictions)  # Fashion-MNIST's


def test_paths_alone_are_found_together_each_file_once(tmp_path: Path) -> None:
    Image.fromarray(_flat(3).numpy()).save(tmp_path / "a.png")
    Image.fromarray(_flat(4).numpy()).save(tmp_path / "b.png")
    for images in ([tmp_path, tmp_path / "a.png", f"{tmp_path}/*.png"], (str(tmp_path), tmp_path / "b.png")):
        assert [(p.image, p.label) for p in _predict(images, invert="no")] == [
            (str(tmp_path / "a.png"), 3), (str(tmp_path / "b.png"), 4)]
    assert [(p.image, p.label) for p in _predict(tmp_path / "b.png", invert="no")] == [(str(tmp_path / "b.png"), 4)]


def test_predict_images_with_a_runs_data_and_invert() -> None:
    from convzoo.errors import ConfigError

    light = torch.stack([_flat(200), _flat(201)])  # as a gray IDX run reads them: inverted, 55 and 54
    assert [p.label for p in _predict(light)] == [5, 4] and [p.label for p in _predict(light, invert="no")] == [0, 1]
    mnist = {"data": "mnist", "classes": [str(d) for d in range(10)], "channels": 1, "size": 28,
             "split": {"rule": "official"}}
    (p, q) = _predict(light, data=mnist, top_k=1)
    assert (p.class_name, q.class_name, len(p.top_labels)) == ("5", "4", 1)
    assert p.unlike_training_data is None  # only a run on Fashion-MNIST judges images against it
    (p, q) = _predict(tuple(light), data=FOLDER_GRAY)  # a folder run: never inverted by auto
    assert [(r.image, r.label, r.class_name, len(r.top_labels)) for r in (p, q)] == [
        ("image 0", 0, "boot", 2), ("image 1", 1, "sandal", 2)]
    assert [r.label for r in _predict(light, data=FOLDER_GRAY, invert="yes")] == [1, 0]  # 55, 54
    with pytest.raises(ConfigError) as error:
        _predict(["missing.png"], data=FOLDER_GRAY, top_k=3)  # refused before any file is read
    assert (str(error.value), error.value.field) == ("--top-k must be between 1 and 2, got 3", "top_k")
    with pytest.raises(ConfigError) as error:
        _predict([])
    assert (str(error.value), error.value.field) == ("no images given", "images")
