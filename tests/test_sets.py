"""convzoo.data.sets, folder, arrays and tree: every kind of data set, every bad folder through the real command."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convzoo.data import DataSet, export_tree, load_split, open_data
from convzoo.data import arrays as arrays_module
from convzoo.data import folder as folder_module
from convzoo.data.sets import stratified_split
from convzoo.errors import DataError

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
PER_CLASS = 12


@pytest.fixture(scope="module")
def slice_images() -> tuple[torch.Tensor, torch.Tensor]:
    return load_split("train", SLICE)


def write_pool(root: Path, images: torch.Tensor, labels: torch.Tensor, per_class: int = PER_CLASS,
               classes: tuple[str, ...] = tuple(f"c{i}" for i in range(10))) -> Path:
    """``root/<class>/<n>.png``: the first ``per_class`` slice images of each class."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(torch.nonzero(labels == label).flatten()[:per_class].tolist()):
            Image.fromarray(images[i].numpy()).save(root / name / f"{n}.png")
    return root


@pytest.fixture
def pool(tmp_path, slice_images) -> Path:
    return write_pool(tmp_path / "pool", *slice_images)


def test_pool_folder_reads_every_image_with_its_class(pool, slice_images):
    data = open_data(str(pool), warn=None)
    assert data.classes == tuple(f"c{i}" for i in range(10)) and data.channels == 1 and data.size == 28
    assert len(data.train_labels) + len(data.test_labels) == 10 * PER_CLASS
    images, labels = slice_images
    first_c3 = images[torch.nonzero(labels == 3).flatten()[0]]
    all_images = torch.cat([data.train_images, data.test_images])[:, 0]
    assert any(torch.equal(first_c3, x) for x in all_images)  # PNG round trip is exact


def test_pool_split_is_stratified_and_reproducible(pool):
    a = open_data(str(pool), warn=None, test_fraction=0.25, seed=3)
    b = open_data(str(pool), warn=None, test_fraction=0.25, seed=3)
    c = open_data(str(pool), warn=None, test_fraction=0.25, seed=4)
    assert torch.equal(a.test_images, b.test_images) and not torch.equal(a.test_images, c.test_images)
    assert torch.bincount(a.test_labels, minlength=10).tolist() == [3] * 10  # round(0.25 * 12) per class
    assert a.describe()["split"] == {"rule": "stratified", "test_fraction": 0.25, "seed": 3}


def test_stratified_split_keeps_one_training_image_per_class():
    splits = stratified_split(np.array([0, 1, 1]), 0.9, 0)
    assert splits[0] == 0 and splits[1:].sum() == 1


def test_exported_tree_reads_back_as_the_same_set(tmp_path):
    train_x, train_y = load_split("train", SLICE)
    test_x, test_y = load_split("test", SLICE)
    data = DataSet("fashion-mnist", ("T-shirt/top", *[f"k{i}" for i in range(1, 10)]),
                   train_x[:200, None], train_y[:200], test_x[:50, None], test_y[:50])
    export_tree(data, tmp_path / "tree")
    assert sorted(p.name for p in (tmp_path / "tree").iterdir()) == ["test", "train"]
    back = open_data(str(tmp_path / "tree"), warn=None)
    assert back.classes[0] == "T-shirt-top" and back.describe()["split"]["rule"] == "folders"
    assert len(back.train_labels) == 200 and len(back.test_labels) == 50
    # same images, whatever the order: compare sorted digests of the rows
    ours = sorted(x.numpy().tobytes() for x in back.train_images[:, 0])
    theirs = sorted(x.numpy().tobytes() for x in train_x[:200])
    assert ours == theirs


def test_export_refuses_a_non_empty_folder(tmp_path, run_cli):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("mine")
    code, _, err = run_cli("data", "export", "fashion-mnist", str(tmp_path / "dest"), "--data-dir", str(SLICE))
    assert code == 2 and "not an empty folder" in err and os.listdir(tmp_path / "dest") == ["keep.txt"]


def test_second_read_comes_from_the_cache(pool, monkeypatch):
    open_data(str(pool), warn=None)
    monkeypatch.setattr(folder_module, "decode", lambda *a, **k: pytest.fail("decoded again"))
    assert len(open_data(str(pool), warn=None).train_labels) > 0


def test_changed_folder_is_decoded_again(pool, slice_images):
    first = open_data(str(pool), warn=None)
    Image.fromarray(slice_images[0][0].numpy()).save(pool / "c0" / "new.png")
    second = open_data(str(pool), warn=None)
    assert len(second.train_labels) + len(second.test_labels) == len(first.train_labels) + len(first.test_labels) + 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_damaged_cache_is_rebuilt_not_trusted(pool, run_cli, damage):
    truth = open_data(str(pool), warn=None)
    cache = arrays_module.cache_file(pool)
    raw = bytearray(cache.read_bytes())
    if damage == "flip":
        raw[-100] ^= 0xFF  # one pixel byte of the payload
    elif damage == "truncate":
        raw = raw[:-10]
    else:
        raw[12] = ord("!")  # inside the JSON header
    cache.write_bytes(bytes(raw))
    code, out, err = run_cli("data", "check", "--data", str(pool))
    assert code == 0 and "cache" in err and "decoding the folder again" in err
    again = open_data(str(pool), warn=None)
    assert torch.equal(again.train_images, truth.train_images)


def test_split_layout_with_val(tmp_path, slice_images):
    write_pool(tmp_path / "d" / "train", *slice_images, per_class=4)
    write_pool(tmp_path / "d" / "val", *slice_images, per_class=2)
    data = open_data(str(tmp_path / "d"), warn=None)
    assert len(data.train_labels) == 40 and len(data.test_labels) == 20
    assert data.describe()["split"] == {"rule": "folders", "layout": "train/val"}


def test_same_image_in_train_and_test_is_warned(tmp_path, slice_images, run_cli):
    write_pool(tmp_path / "d" / "train", *slice_images, per_class=4)
    write_pool(tmp_path / "d" / "test", *slice_images, per_class=2)  # the first two of each class again
    code, out, err = run_cli("data", "check", "--data", str(tmp_path / "d"))
    assert code == 0 and "warning: 20 test images are also in the training split" in err


def test_colour_images_make_three_channels_unless_grayscale(tmp_path, slice_images):
    root = write_pool(tmp_path / "d", *slice_images, per_class=3)
    Image.new("RGB", (28, 28), (255, 0, 0)).save(root / "c0" / "red.png")
    data = open_data(str(root), warn=None)
    assert data.channels == 3 and data.train_images.dtype == torch.uint8
    everything = torch.cat([data.train_images, data.test_images])
    red = [x for x in everything if x[0].float().mean() == 255 and x[1].max() == 0]
    assert len(red) == 1
    gray = open_data(str(root), warn=None, grayscale=True)
    assert gray.channels == 1 and (torch.cat([gray.train_images, gray.test_images]) == 76).all(dim=(1, 2, 3)).sum() == 1


@pytest.mark.parametrize("mode", ["P", "RGBA", "I;16", "CMYK", "LA", "1"])
def test_every_mode_is_converted(tmp_path, slice_images, mode):
    root = write_pool(tmp_path / "d", *slice_images, per_class=3)
    odd = Image.fromarray(slice_images[0][0].numpy())
    odd = odd.convert("I").point(lambda v: v * 257).convert("I;16") if mode == "I;16" else odd.convert(mode)
    odd.save(root / "c0" / ("odd.tif" if mode in ("CMYK", "I;16") else "odd.png"))
    data = open_data(str(root), warn=None, grayscale=True)
    assert len(data.train_labels) + len(data.test_labels) == 31 and data.channels == 1


def test_images_of_other_sizes_are_resized_to_the_most_common(tmp_path, slice_images):
    root = write_pool(tmp_path / "d", *slice_images, per_class=3)
    Image.new("L", (100, 60), 255).save(root / "c1" / "big.png")
    data = open_data(str(root), warn=None)
    assert data.size == 28 and (torch.cat([data.train_images, data.test_images]) == 255).all(dim=(1, 2, 3)).sum() == 1
    assert open_data(str(root), warn=None, size=14).size == 14


# ---------------------------------------------------------------------------------------------
# Bad folders, each through `convzoo data check --data DIR`: one line, exit status 2, or a warning


def check(run_cli, root: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("data", "check", "--data", str(root), *extra)


def test_corrupt_images_beyond_the_fraction_are_refused_naming_one(pool, run_cli):
    for name in ("0.png", "1.png"):  # 2 of 120 images: more than 1%
        (pool / "c2" / name).write_bytes((pool / "c2" / name).read_bytes()[:40])  # truncated
    code, out, err = check(run_cli, pool)
    assert code == 2 and err.count("\n") == 1 and "2 of 120 images cannot be read" in err and "c2/0.png" in err


def test_a_few_corrupt_images_are_skipped_with_one_warning(tmp_path, slice_images, run_cli):
    root = write_pool(tmp_path / "d", *slice_images, per_class=PER_CLASS * 2)  # 240 images: 1% is 2
    (root / "c2" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    (root / "c5" / "1.png").write_bytes((root / "c5" / "1.png").read_bytes()[:-30])
    code, out, err = check(run_cli, root)
    assert code == 0 and "warning: skipped 2 of 240 images that cannot be read" in err and "ok " in out
    assert "188 training and 50 test" in out  # 5 test images per class: round(0.2 * 23) = round(0.2 * 24)


def test_empty_class_folder(pool, run_cli):
    (pool / "empty").mkdir()
    code, _, err = check(run_cli, pool)
    assert code == 2 and "empty: class folder with no images" in err


def test_single_class(tmp_path, slice_images, run_cli):
    root = write_pool(tmp_path / "d", *slice_images, per_class=3, classes=("only",))
    code, _, err = check(run_cli, root)
    assert code == 2 and "only one class folder (only)" in err


def test_files_that_are_not_images_and_hidden_files(pool, run_cli):
    (pool / "c1" / "notes.txt").write_text("hello")
    (pool / "c1" / ".DS_Store").write_bytes(b"\0\1")
    (pool / ".hidden").mkdir()
    (pool / ".hidden" / "x.png").write_bytes(b"junk")
    code, out, err = check(run_cli, pool)
    assert code == 0 and "ignored 1 files that are not images" in err and "c1/notes.txt" in err
    assert ".DS_Store" not in err and "10 classes" in out


def test_symlink_loops_are_walked_once(pool, run_cli):
    os.symlink("..", pool / "c3" / "loop")
    os.symlink(pool / "c4", pool / "c3" / "again")  # c4's images under c3 too? c4 was walked already: not again
    code, out, err = check(run_cli, pool, "--json")
    assert code == 0
    described = json.loads(out)
    assert described["train"] + described["test"] == 10 * PER_CLASS


def test_decompression_bomb_is_a_bad_image(tmp_path, slice_images, run_cli, monkeypatch):
    root = write_pool(tmp_path / "d", *slice_images, per_class=3)
    monkeypatch.setattr(folder_module, "MAX_PIXELS", 5000)
    Image.new("L", (100, 100)).save(root / "c0" / "bomb.png")  # 10,000 pixels > the limit patched above
    code, _, err = check(run_cli, root)
    assert code == 2 and "bomb.png: larger than the limit of 5,000 pixels" in err


def test_names_that_are_not_utf8(tmp_path, slice_images, run_cli):
    root = write_pool(tmp_path / "d", *slice_images, per_class=3)
    bad = os.fsencode(root) + b"/caf\xe9"
    os.rename(root / "c9", bad)
    code, out, err = check(run_cli, root)
    assert code == 0 and "caf\\xe9" in out
    (Path(os.fsdecode(bad)) / "0.png").write_bytes(b"junk")
    code, _, err = check(run_cli, root)
    assert code == 2 and "caf\\xe9/0.png" in err


def test_folder_too_large_for_memory_is_refused_before_decoding(pool, run_cli, monkeypatch):
    from convzoo.data import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    monkeypatch.setattr(folder_module, "_decode", lambda *a: pytest.fail("decoded"))
    code, _, err = check(run_cli, pool, "--size", "64")
    assert code == 2 and "needs 480.0 KiB of memory but only 1000 bytes is available" in err
    assert "a size of 32 would need" in err


def test_unknown_name_or_missing_folder(tmp_path, run_cli):
    code, _, err = check(run_cli, tmp_path / "nowhere")
    assert code == 2 and "no such data set or folder" in err and "cifar10" in err


def test_train_without_test_folder(tmp_path, slice_images, run_cli):
    write_pool(tmp_path / "d" / "train", *slice_images, per_class=2)
    code, _, err = check(run_cli, tmp_path / "d")
    assert code == 2 and "has train/ but no test/ or val/" in err


def test_show_uses_the_folders_class_names(pool, run_cli, tmp_path):
    code, out, _ = run_cli("data", "show", "--data", str(pool), "--out", str(tmp_path / "s.png"), "--count", "4")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0


def test_cache_file_lives_under_the_user_cache(pool):
    open_data(str(pool), warn=None)
    assert arrays_module.cache_file(pool).is_file()
    assert str(arrays_module.cache_file(pool)).startswith(os.environ["XDG_CACHE_HOME"])
    shutil.rmtree(arrays_module.cache_file(pool).parent)
    with pytest.raises(DataError):
        open_data(str(pool), warn=None, test_fraction=1.0)


def test_read_image_decodes_one_file_as_the_folder_does(pool):
    from convzoo.data.folder import read_image

    data = open_data(str(pool), warn=None, test_fraction=0.5)
    one = read_image(pool / "c0" / "0.png", data.channels, data.size)
    everything = torch.cat([data.train_images, data.test_images])
    assert one.shape == (1, 28, 28) and any(torch.equal(one, x) for x in everything)
    assert read_image(pool / "c0" / "0.png", 3, 14).shape == (3, 14, 14)
    (pool / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.png: not|bad.png: corrupt"):
        read_image(pool / "bad.png", 1, 28)


def test_a_folder_of_idx_files_and_emnist_names(tmp_path, run_cli):
    from idx_files import idx, write

    plain = tmp_path / "plain"
    plain.mkdir()
    pixels = bytes(range(12)) * 2
    write(plain / "train-images-idx3-ubyte.gz", idx((2, 3, 4), pixels))
    write(plain / "train-labels-idx1-ubyte", idx((2,), b"\0\2"), gz=False)
    write(plain / "t10k-images-idx3-ubyte.gz", idx((2, 3, 4), pixels))
    write(plain / "t10k-labels-idx1-ubyte.gz", idx((2,), b"\1\0"))
    data = open_data(str(plain), warn=None)
    assert data.classes == ("0", "1", "2") and data.size == 3  # oblong images squared to the shorter side
    emnist = tmp_path / "emnist"
    emnist.mkdir()
    for split in ("train", "test"):
        write(emnist / f"emnist-letters-{split}-images-idx3-ubyte.gz", idx((1, 2, 2), b"\1\2\3\4"))
        write(emnist / f"emnist-letters-{split}-labels-idx1-ubyte.gz", idx((1,), b"\1"))
    data = open_data(str(emnist), warn=None)
    assert data.train_images[0, 0].tolist() == [[1, 3], [2, 4]]  # stored transposed, read upright
    (emnist / "emnist-digits-train-images-idx3-ubyte.gz").write_bytes(b"")
    code, _, err = run_cli("data", "check", "--data", str(emnist))
    assert code == 2 and "holds several IDX sets (emnist-digits-, emnist-letters-)" in err
