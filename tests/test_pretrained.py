"""The trained runs shipped with the package: complete, small, and still scoring what their record says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convzoo import api
from convzoo.errors import UserError
from convzoo.pretrained import UnknownPretrainedError, pretrained_dir, pretrained_names

ROOT = Path(__file__).resolve().parents[1]
REAL = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = ["lenet", "lenet_bn", "lenet_modern"]
FILES = {".convzoo-run", "config.json", "metrics.jsonl", "model.safetensors", "result.json"}


def test_the_shipped_runs_are_complete_small_run_directories() -> None:
    assert pretrained_names() == SHIPPED
    for name in SHIPPED:
        run = pretrained_dir(name)
        assert {path.name for path in run.iterdir()} == FILES  # no pictures, no checkpoint, no report
        assert sum(path.stat().st_size for path in run.iterdir()) < 600_000
        config = json.loads((run / "config.json").read_text())["config"]
        assert config["model"] == name and config["limit_train"] is None and config["limit_test"] is None
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert len(history) == config["epochs"] == json.loads((run / "result.json").read_text())["epochs"]



def test_every_shipped_file_is_package_data() -> None:
    """pyproject's package-data globs take each file of each shipped run into the wheel (checked by building one)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["convzoo"]
    package = ROOT / "src" / "convzoo"
    for name in SHIPPED:
        for path in pretrained_dir(name).iterdir():
            assert any(path.relative_to(package).match(glob) for glob in globs), path


def test_an_unknown_name_is_a_users_error_naming_the_shipped_ones() -> None:
    with pytest.raises(UnknownPretrainedError) as caught:
        pretrained_dir("resnet18")
    assert isinstance(caught.value, UserError)
    assert str(caught.value) == "no pretrained run 'resnet18'; the pretrained runs are: lenet, lenet_bn, lenet_modern"
    with pytest.raises(UnknownPretrainedError):
        pretrained_dir("../lenet")


@pytest.mark.skipif(not (REAL / "t10k-images-idx3-ubyte.gz").is_file(), reason="the real Fashion-MNIST is not here")
@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_run_scores_what_its_record_says(name: str) -> None:
    run_dir = pretrained_dir(name)
    recorded = json.loads((run_dir / "result.json").read_text())["test_acc"]
    evaluation = api.load(run_dir, device="cpu").evaluate(REAL, progress=False)
    assert evaluation.count == 10_000
    assert evaluation.accuracy == pytest.approx(recorded, abs=1e-4)
