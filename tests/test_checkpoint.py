"""Checkpoints: a snapshot is a copy of the live weights (reading them back is tested in test_reliability.py)."""

from __future__ import annotations

import json
import math
import os
import pickle
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convzoo import checkpoint, tensorfile
from convzoo.checkpoint import CheckpointError, load_state, save_model, save_state, saved_epoch, snapshot_state
from convzoo.models import create_model


def test_checkpoint_snapshot_is_a_copy_of_the_live_weights() -> None:
    from convzoo.models import create_model

    model = create_model("lenet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    tensors, metadata = snapshot_state(model, optimizer, epoch=1, history=[])
    saved = {k: v.clone() for k, v in tensors.items()}
    with torch.no_grad():  # training goes on while the snapshot is being written
        for p in model.parameters():
            p.add_(1)
    optimizer.step()
    assert all(torch.equal(tensors[k], saved[k]) for k in saved)
    assert metadata["epoch"] == "1" and any(k.startswith("optim.") for k in tensors)


# --- reading back what was saved -----------------------------------------------------------------

def _trained(momentum: float = 0.9) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from convzoo.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.rand(2, 1, 28, 28)).sum().backward()
        optimizer.step()
    return model, optimizer


def _rows(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.5, "seconds": 1.0, "eval_seconds": 0.1}
            for e in range(1, epochs + 1)]


def test_saved_epoch_reads_the_header_of_a_checkpoint_only(tmp_path: Path) -> None:
    model, optimizer = _trained()
    save_state(tmp_path / "checkpoint.safetensors", model, optimizer, epoch=3, history=_rows(3))
    save_model(tmp_path / "model.safetensors", model)
    (tmp_path / "garbage").write_bytes(b"\x00" * 64)
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"epoch": 3}))
    assert saved_epoch(tmp_path / "checkpoint.safetensors") == 3
    assert saved_epoch(str(tmp_path / "checkpoint.safetensors")) == 3
    for other in ("model.safetensors", "garbage", "pickle.pt", "missing"):  # no epoch, not safetensors, no file
        assert saved_epoch(tmp_path / other) is None, other


def test_load_state_restores_the_optimizers_state_exactly(tmp_path: Path) -> None:
    model, optimizer = _trained()
    save_state(tmp_path / "c.safetensors", model, optimizer, epoch=2, history=_rows(2))
    fresh, fresh_optimizer = _trained(momentum=0.9)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh_optimizer.state.clear()
    epoch, history = load_state(tmp_path / "c.safetensors", fresh, fresh_optimizer)
    assert (epoch, history) == (2, _rows(2))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    saved, restored = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys() and len(saved) == len(list(model.parameters()))
    for index in saved:
        assert torch.equal(saved[index]["momentum_buffer"], restored[index]["momentum_buffer"]), index


def test_an_optimizer_state_for_a_parameter_the_model_lacks_is_refused(tmp_path: Path) -> None:
    model, optimizer = _trained()
    tensors, metadata = snapshot_state(model, optimizer, epoch=1, history=_rows(1))
    count = len(list(model.parameters()))
    tensors[f"optim.{count}.momentum_buffer"] = tensors.pop(f"optim.{count - 1}.momentum_buffer")
    checkpoint._write(tmp_path / "c.safetensors", tensors, metadata)
    with pytest.raises(CheckpointError, match=f"is not a valid convzoo checkpoint .*{count}"):
        load_state(tmp_path / "c.safetensors", model, optimizer)


def test_a_broken_history_row_is_named_by_its_number(tmp_path: Path) -> None:
    model, optimizer = _trained()
    rows = _rows(3)
    rows[1]["train_loss"] = "low"
    tensors, metadata = snapshot_state(model, optimizer, epoch=3, history=rows)
    checkpoint._write(tmp_path / "c.safetensors", tensors, metadata)
    with pytest.raises(CheckpointError, match="history row 2 is not a row of metrics"):
        load_state(tmp_path / "c.safetensors", model, optimizer)


def test_plain_numbers_in_the_optimizers_state_go_through_the_metadata_and_back(tmp_path: Path) -> None:
    model, optimizer = _trained()
    first = next(iter(model.parameters()))
    optimizer.state[first]["step"] = 3  # a plain number, as some optimizers keep
    optimizer.state[first]["done"] = None
    tensors, metadata = snapshot_state(model, optimizer, epoch=1, history=_rows(1))
    assert json.loads(metadata["optimizer"]) == {"state": {"0": {"step": 3, "done": None}}}
    checkpoint._write(tmp_path / "c.safetensors", tensors, metadata)
    fresh, fresh_optimizer = _trained()
    load_state(tmp_path / "c.safetensors", fresh, fresh_optimizer)
    restored = fresh_optimizer.state_dict()["state"][0]
    assert restored["step"] == 3 and restored["done"] is None
    assert torch.equal(restored["momentum_buffer"], optimizer.state[first]["momentum_buffer"])


@pytest.mark.parametrize("plain", [{"0": {"step": [1]}}, {"0": {"step": "3"}}, {"0": [3]}, {"99": {"step": 1}}])
def test_an_optimizer_state_that_is_not_plain_numbers_is_refused(tmp_path: Path, plain: dict) -> None:
    model, optimizer = _trained()
    tensors, metadata = snapshot_state(model, optimizer, epoch=1, history=_rows(1))
    metadata["optimizer"] = json.dumps({"state": plain})
    checkpoint._write(tmp_path / "c.safetensors", tensors, metadata)
    with pytest.raises(CheckpointError, match="is not plain numbers"):
        load_state(tmp_path / "c.safetensors", model, optimizer)


def test_a_checkpoint_of_no_completed_epoch_is_read_back(tmp_path: Path) -> None:
    model, optimizer = _trained()
    save_state(tmp_path / "c.safetensors", model, optimizer, epoch=0, history=[])
    assert load_state(tmp_path / "c.safetensors", model, optimizer) == (0, [])


def test_cuda_generator_states_are_read_in_device_order_and_checked() -> None:
    cpu = torch.get_rng_state()
    states = {i: torch.full((16,), i, dtype=torch.uint8) for i in (0, 2, 10)}
    tensors = {"rng.cpu": cpu, **{f"rng.cuda.{i}": s for i, s in reversed(states.items())}}
    parsed = checkpoint._parse_rng(tensors)
    assert torch.equal(parsed[0], cpu) and [int(t[0]) for t in parsed[1:]] == [0, 2, 10]
    for bad in (torch.zeros(16, dtype=torch.int64), torch.zeros(2, 8, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="^a CUDA generator state is not a uint8 vector$"):
            checkpoint._parse_rng({"rng.cpu": cpu, "rng.cuda.0": bad})


def test_cuda_generator_states_are_saved_only_once_cuda_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    model, optimizer = _trained()
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((16,), 7, dtype=torch.uint8)])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # a GPU machine that never used CUDA
    tensors, _ = snapshot_state(model, optimizer, epoch=1, history=_rows(1))
    assert not [k for k in tensors if k.startswith("rng.cuda")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    tensors, _ = snapshot_state(model, optimizer, epoch=1, history=_rows(1))
    assert not [k for k in tensors if k.startswith("rng.cuda")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    tensors, _ = snapshot_state(model, optimizer, epoch=1, history=_rows(1))
    assert torch.equal(tensors["rng.cuda.0"], torch.full((16,), 7, dtype=torch.uint8))


def test_refusals_say_what_the_file_is(tmp_path: Path) -> None:
    (tmp_path / "old.pt").write_bytes(pickle.dumps({"epoch": 3}))
    with pytest.raises(CheckpointError, match=r"old.pt is a pickle-based PyTorch file; convzoo only opens safetensors "
                       r"files \(a pickle can run code when it is opened\)$"):
        checkpoint.load_model(tmp_path / "old.pt")
    model, _ = _trained()
    checkpoint._write(tmp_path / "other.safetensors", dict(model.state_dict()), {"format": "other"})
    with pytest.raises(CheckpointError, match=r"is not a convzoo convzoo-\d+ file \(format 'other'\)$"):
        checkpoint.load_model(tmp_path / "other.safetensors")


@pytest.mark.parametrize("config, message", [
    ({}, "the run has no model name in its configuration"),
    ({"name": "lenet", "num_classes": [10], "x": 1.5},
     "the run has an invalid model configuration: 'num_classes', 'x'"),
    ({"name": "lenet", "bogus": 1}, "the run has an invalid model configuration: .*bogus"),
])
def test_a_bad_model_configuration_is_named(config: dict, message: str) -> None:
    with pytest.raises(CheckpointError, match=f"^{message}"):
        checkpoint.build_from_config(config)


def test_a_weight_of_another_shape_or_dtype_is_named_with_both() -> None:
    model, _ = _trained()

    def entries(state: dict[str, torch.Tensor]) -> dict:  # what read_header gives for a file of ``state``
        return {name: (t.dtype, tuple(t.shape)) for name, t in state.items()}

    state = dict(model.state_dict())
    state["0.weight"] = state["0.weight"].double()
    with pytest.raises(CheckpointError, match=r"^f does not match its model: 0.weight is torch.float64 "
                       r"\(6, 1, 5, 5\), the model has torch.float32 \(6, 1, 5, 5\)$"):
        checkpoint._check_entries(model.state_dict(), entries(state), "f", "its model")
    extra = {**dict(model.state_dict()), "a": torch.zeros(1), "b": torch.zeros(1), "c": torch.zeros(1),
             "d": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"^f does not match its model: it has unexpected a, b, c$"):
        checkpoint._check_entries(model.state_dict(), entries(extra), "f", "its model")


def test_restored_weights_stay_the_parameters_the_optimizer_updates(tmp_path: Path) -> None:
    model, optimizer = _trained()
    save_state(tmp_path / "c.safetensors", model, optimizer, epoch=1, history=_rows(1))
    fresh, fresh_optimizer = _trained()
    params = list(fresh.parameters())
    load_state(tmp_path / "c.safetensors", fresh, fresh_optimizer)
    assert all(a is b for a, b in zip(params, fresh.parameters(), strict=True))
    assert all(a is b for a, b in zip(params, fresh_optimizer.param_groups[0]["params"], strict=True))


def test_a_gpu_machines_checkpoint_resumes_on_a_cpu_and_restores_each_device(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model, optimizer = _trained()
    tensors, metadata = snapshot_state(model, optimizer, epoch=1, history=_rows(1))
    for i in range(4):  # a machine with 4 GPUs
        tensors[f"rng.cuda.{i}"] = torch.full((16,), i, dtype=torch.uint8)
    checkpoint._write(tmp_path / "c.safetensors", tensors, metadata)
    load_state(tmp_path / "c.safetensors", model, optimizer)  # no CUDA here: the CUDA states are not used
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    load_state(tmp_path / "c.safetensors", model, optimizer)
    assert [int(t[0]) for t in restored] == [0, 1]  # one state per device of this machine (2 of the 4)


def test_plain_numbers_for_a_parameter_with_no_tensor_state_are_restored(tmp_path: Path) -> None:
    model, optimizer = _trained(momentum=0.0)  # plain SGD keeps no state of its own
    first = next(iter(model.parameters()))
    optimizer.state[first]["step"] = 3
    save_state(tmp_path / "c.safetensors", model, optimizer, epoch=1, history=_rows(1))
    fresh, fresh_optimizer = _trained(momentum=0.0)
    load_state(tmp_path / "c.safetensors", fresh, fresh_optimizer)
    assert fresh_optimizer.state_dict()["state"] == {0: {"step": 3}}


# --- sizes known from the header before a tensor is read; states that fit the run -------------------

def _under_memory_limit(code: str, limit_mib: int = 1500) -> subprocess.CompletedProcess:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))

    src = str(Path(checkpoint.__file__).parents[1])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=cap,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src,
                               "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"})


def _sparse_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]], metadata: dict[str, str],
                        data_bytes: int | None = None) -> Path:
    """A safetensors file whose header declares ``tensors`` (name: (dtype, shape) of float32s) and whose data
    is ``data_bytes`` long (default: what the header says), as a sparse file: no disk, no memory."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        end = offset + 4 * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header).encode()
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + (offset if data_bytes is None else data_bytes))
    return path


def test_a_large_unrelated_weights_file_is_refused_from_its_header_within_a_memory_limit(tmp_path: Path) -> None:
    """A 4 GiB weights file (sparse) whose names are not LeNet's: refused before any of it is read, in a
    process that could not map or copy it (1.5 GB of address space, torch included)."""
    metadata = {"format": checkpoint.FORMAT, "model": json.dumps(create_model("lenet").config), "sha256": "0"}
    big = _sparse_safetensors(tmp_path / "model.safetensors", {"huge": ("F32", [1 << 30])}, metadata)
    proc = _under_memory_limit(
        "import sys\nfrom convzoo.checkpoint import CheckpointError, load_model\n"
        f"try:\n    load_model({str(big)!r})\nexcept CheckpointError as exc:\n    print(exc)\n")
    assert proc.returncode == 0, proc.stderr
    assert "does not match its model: it lacks" in proc.stdout


@pytest.mark.parametrize(("declared", "actual", "message"), [
    ({"w": ("F32", [10])}, 1 << 20, "do not fill the 1,048,576 bytes"),  # the file is larger than its header says
    ({"w": ("F32", [1 << 40])}, 40, "do not fill the 40 bytes"),  # the header claims 4 TiB
])
def test_a_file_whose_size_does_not_match_its_header_is_refused(tmp_path: Path, declared: dict, actual: int,
                                                                 message: str) -> None:
    path = _sparse_safetensors(tmp_path / "w.safetensors", declared, {"format": checkpoint.FORMAT}, actual)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.read_header(path)


def test_a_header_longer_than_the_cap_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    with path.open("wb") as f:
        f.write((tensorfile.MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{")
        f.truncate(tensorfile.MAX_HEADER_BYTES + 64)
    with pytest.raises(CheckpointError, match="at most 268,435,456 are read"):
        checkpoint.read_header(path)


def test_a_header_with_a_number_of_thousands_of_digits_is_refused(tmp_path: Path) -> None:
    """Python refuses to read an integer of more than 4,300 digits with a ValueError that was not translated."""
    header = b'{"w": {"dtype": "F32", "shape": [1' + b"0" * 5000 + b'], "data_offsets": [0, 4]}}'
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    with pytest.raises(CheckpointError, match="its header is not JSON"):
        checkpoint.read_header(path)


dims = st.lists(st.integers(min_value=-2, max_value=1 << 62), max_size=4)


@given(st.dictionaries(st.text(max_size=5), st.tuples(st.sampled_from(["F32", "U8", "I64", "X9", 3]), dims,
                                                      st.lists(st.integers(-5, 1 << 62), max_size=3)), max_size=4),
       st.integers(min_value=0, max_value=4096))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_header_is_read_or_refused_as_a_checkpoint_error(tmp_path: Path, entries: dict, data_bytes: int) -> None:
    """Arbitrary dimensions, dtypes and offsets: a CheckpointError, or entries that tile the data exactly."""
    header = {name: {"dtype": dtype, "shape": shape, "data_offsets": offsets}
              for name, (dtype, shape, offsets) in entries.items()}
    text = json.dumps(header).encode()
    path = tmp_path / "h.safetensors"
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + data_bytes)
    try:
        found, _ = checkpoint.read_header(path)
    except CheckpointError:
        return
    assert sum(math.prod(shape) * dtype.itemsize for dtype, shape in found.values()) == data_bytes


@pytest.mark.parametrize("tamper", ["scalar", "other parameter's shape", "half precision", "plain number"])
def test_resume_refuses_an_optimizer_state_of_the_wrong_shape_before_the_first_step(
    tiny_run: Path, tmp_path: Path, tamper: str, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """A checkpoint with a valid checksum whose AdamW state does not fit its parameter: one line, nothing trained."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    tensors, metadata = checkpoint._read(run / "checkpoint.safetensors")
    first = "optim.0.exp_avg"
    if tamper == "scalar":
        tensors[first] = tensors[first].flatten()[0].clone()
    elif tamper == "other parameter's shape":
        tensors[first] = tensors["optim.1.exp_avg"].clone()
    elif tamper == "half precision":
        tensors[first] = tensors[first].half()
    else:
        del tensors[first]
        optimizer = json.loads(metadata["optimizer"])
        optimizer["state"]["0"] = {"exp_avg": 0.5}
        metadata["optimizer"] = json.dumps(optimizer)
    metadata = {k: v for k, v in metadata.items() if k not in ("format", "sha256")}
    checkpoint._write(run / "checkpoint.safetensors", tensors, metadata)
    before = (run / "metrics.jsonl").read_text()
    code, out, err = run_cli("train", "--resume", str(run), "--epochs", "2", "--device", "cpu")
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "optimizer state" in err and ("optim.0.exp_avg" in err or "exp_avg" in err), err
    assert (run / "metrics.jsonl").read_text() == before
