"""convzoo.fileio: writes that replace a file only once complete."""

from __future__ import annotations

import json

import pytest

from convzoo import fileio


def test_atomic_path_replaces_only_on_success(tmp_path):
    path = tmp_path / "sub" / "result.json"
    fileio.write_json(path, {"acc": 0.9, "epochs": [1, 2]})
    assert json.loads(path.read_text()) == {"acc": 0.9, "epochs": [1, 2]}
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp.suffix == ".json"
            tmp.write_text("{half")
            raise RuntimeError("crash while writing")
    assert json.loads(path.read_text())["acc"] == 0.9
    assert list(path.parent.iterdir()) == [path]
    fileio.write_text(path, "done\n")
    assert path.read_text() == "done\n"
