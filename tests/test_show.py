"""convzoo.show and `convzoo show`: pictures of a trained run, drawn into its directory."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from convzoo import figures, rundir
from convzoo.checkpoint import load_model
from convzoo.data import load_split

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


def assert_picture(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """``path`` is a PNG (of ``size`` pixels when given) that is not blank; returns its RGB pixels."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        if size is not None:
            assert image.size == size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert min(pixels.shape[:2]) >= 150
    assert pixels.mean(axis=2).std() > 15, f"{path.name} looks blank"
    return pixels


def pixel_size(fig: Figure) -> tuple[int, int]:
    width, height = fig.get_size_inches() * figures.DPI
    return round(width), round(height)


# --- `convzoo show`, from a trained run -------------------------------------------------------

def test_show_kernels(run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = run_cli("show", "kernels", str(run))
    assert code == 0 and out.strip() == f"wrote {run / 'kernels.png'}"
    model = load_model(run / "model.safetensors")
    pixels = assert_picture(run / "kernels.png", pixel_size(figures.layer_kernels_figure(model)))
    red, blue = pixels[..., 0] - pixels[..., 2], pixels[..., 2] - pixels[..., 0]
    assert (red > 80).sum() > 50 and (blue > 80).sum() > 50  # a diverging map: both signs are drawn

    code, _, _ = run_cli("show", "kernels", str(run), "--layer", "3", "--out", str(tmp_path / "k3.png"))
    assert code == 0
    assert_picture(tmp_path / "k3.png", pixel_size(figures.layer_kernels_figure(model, "3")))


def test_show_features(run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    png = tmp_path / "boot.png"
    Image.fromarray(load_split("test", SLICE)[0][0].numpy()).save(png)
    code, out, _ = run_cli("show", "features", str(run), str(png))
    assert code == 0 and out.strip() == f"wrote {run / 'features.png'}"
    assert_picture(run / "features.png")


def test_show_mistakes(run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    out_png = tmp_path / "wrong.png"
    code, _, _ = run_cli("show", "mistakes", str(run), "--count", "16", "--out", str(out_png), "--device", "cpu",
                         "--data-dir", str(SLICE))
    assert code == 0
    # 16 tiles in rows of 8: 2 rows.
    images, labels = load_split("test", SLICE)
    assert_picture(out_png, pixel_size(figures.mistakes_figure(images[:16], labels[:16], (labels[:16] + 1) % 10)))


def test_show_confusion_curves_and_ops(run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, _ = run_cli("show", "confusion", str(run), "--out", str(tmp_path / "c.png"), "--device", "cpu")
    assert code == 0
    assert_picture(tmp_path / "c.png")

    other = tmp_path / "lenet-again"
    shutil.copytree(run, other)
    code, _, _ = run_cli("show", "curves", str(run), str(other), "--out", str(tmp_path / "curves.png"))
    assert code == 0
    fig = figures.runs_figure(rundir.run_histories([run, other]))
    assert_picture(tmp_path / "curves.png", pixel_size(fig))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["lenet", "lenet-again"]

    code, _, _ = run_cli("show", "ops", "--out", str(tmp_path / "ops.png"))
    assert code == 0
    assert_picture(tmp_path / "ops.png", pixel_size(figures.ops_figure()))


@pytest.mark.parametrize("args, message", [
    (["show", "kernels", "{run}", "--layer", "7"], "no conv layer named '7' in lenet; its conv layers: 0, 3"),
    (["show", "kernels", "{tmp}/nowhere"], "not a convzoo run directory"),
    (["show", "features", "{run}", "{tmp}/missing.png"], "no such file"),
    (["show", "mistakes", "{run}", "--count", "0"], "--count must be between 1 and 1,000"),
    (["show", "curves", "{tmp}"], "no metrics.jsonl"),
])
def test_show_errors_are_one_line(args: list[str], message: str, run: Path, tmp_path: Path,
                                  run_cli: Callable[..., tuple[int, str, str]]) -> None:
    out = tmp_path / "out.png"
    code, _, err = run_cli(*(a.format(run=run, tmp=tmp_path) for a in args), "--out", str(out))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


# --- an --out that names a run's own file (issue 23) --------------------------------------------------------------

@pytest.mark.parametrize("argv, own", [
    (["show", "kernels", "{run}", "--out", "{run}/model.safetensors"], "model.safetensors"),
    (["show", "curves", "{run}", "--out", "{run}/metrics.jsonl"], "metrics.jsonl"),
    (["show", "ops", "--out", "{run}/config.json"], "config.json"),
    (["data", "show", "--data-dir", str(SLICE), "--count", "4", "--out", "{run}/result.json"], "result.json"),
])
def test_an_out_naming_a_runs_own_file_is_refused_and_the_file_kept(
    argv: list[str], own: str, run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {path.name: path.read_bytes() for path in copy.iterdir()}
    code, out, err = run_cli(*(a.format(run=copy) for a in argv))
    assert code == 2 and out == ""
    assert err == f"error: --out {copy / own} would replace the run's own {own}; choose another --out\n"
    assert {path.name: path.read_bytes() for path in copy.iterdir()} == before
