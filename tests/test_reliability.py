"""Reliability and security: every row of docs/reliability.md, run as the real command.

Each catalogue row runs ``python -m convzoo ...`` in its own directory and environment and checks
the exit status, the single ``error: ...`` line, that no traceback appears and that nothing in
the row's directory was written or half-written. The rows run through tests/cli_runner.py, which
imports torch once and forks one process per command (about 0.2 s a command instead of 2 s);
``test_runner_matches_a_fresh_interpreter`` checks it reports what fresh interpreters do.
Signals, kill -9 and the malicious pickle use fresh processes too.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import convzoo
from convzoo import checkpoint
from convzoo.checkpoint import CheckpointError, load_model, load_state, save_model, save_state
from convzoo.config import recipe
from convzoo.images import ImageError, load_image
from convzoo.models import create_model
from convzoo.monitor import divergence_check_interval
from convzoo.optim import make_optimizer
from convzoo.train import fit
from idx_files import idx, make_dir, write

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
RUNNER = Path(__file__).parent / "cli_runner.py"
# One thread per process: the test machine has two cores, and OpenMP threads that wait for a busy
# core make a step tens of times slower.
# PYTHONPATH: the commands run the convzoo this process imports (a worktree's src/), not whichever the
# environment happens to have installed.
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8",
       "PYTHONPATH": str(Path(convzoo.__file__).resolve().parents[1])}
# Learns within two epochs (test accuracy > 0.5), so no "not learning" warning joins the output.
TRAIN = ["--optimizer", "adamw", "--lr", "0.005", "--batch-size", "32", "--limit-test", "200",
         "--data-dir", str(SLICE), "--device", "cpu"]


def train_run(out: Path, epochs: int = 1, **overrides: object) -> Path:
    config = recipe("lenet", optimizer="adamw", lr=0.005, batch_size=32, epochs=epochs, limit_test=200,
                    data_dir=str(SLICE), device="cpu", threads=1, **{"limit_train": 512, **overrides})
    fit(config, out, log=lambda _: None, warn=lambda _: None, progress=False)
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if ".tmp" in p.name]


# --- files the rows need ------------------------------------------------------------------------

class Payload:
    """A pickle that creates ``marker`` when it is unpickled: what a malicious .pt file can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


def pickle_checkpoint(path: Path, marker: Path, *, zip_format: bool) -> Path:
    """A torch.save zip archive (``zip_format``) or a bare pickle, either one running ``Payload``."""
    if zip_format:
        torch.save({"conv.weight": torch.zeros(1), "config": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"state": Payload(marker)}, protocol=2))
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes (its pixel data is missing)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def images_of_every_kind(d: Path) -> list[str]:
    """Colour, alpha, grey+alpha, 16-bit, palette with transparency, CMYK JPEG and 1-bit images of a shoe-like blob."""
    y, x = np.mgrid[:40, :48]
    blob = ((x - 24) ** 2 / 300 + (y - 20) ** 2 / 80 < 1).astype(np.uint8) * 200
    rgb = np.stack([blob, blob // 2, 255 - blob], axis=-1).astype(np.uint8)
    files = {
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(np.dstack([rgb, blob]).astype(np.uint8)),
        "la.png": Image.fromarray(np.dstack([blob, blob]).astype(np.uint8), mode="LA"),
        "gray16.png": Image.fromarray(blob.astype(np.uint16) * 300),
        "palette.gif": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "bilevel.png": Image.fromarray(blob > 0),
    }
    for name, image in files.items():
        extra = {"transparency": 0} if name.endswith(".gif") else {}
        image.save(d / name, **extra)
    assert Image.open(d / "gray16.png").mode.startswith("I")
    return list(files)


def data_dir(kind: str) -> Callable[[Path], None]:
    """A setup that writes a synthetic data directory ``d/data`` with one fault."""
    def setup(d: Path) -> None:
        root = d / "data"
        if kind == "count":
            make_dir(root, train_labels=bytes(5))  # 6 images, 5 labels
        elif kind == "label":
            make_dir(root, train_labels=bytes([0, 1, 2, 3, 4, 12]))
        elif kind == "size":
            make_dir(root, side=32)
        elif kind == "empty":
            make_dir(root, n_train=0)
        else:
            make_dir(root)
            images = root / "train-images-idx3-ubyte.gz"
            if kind == "truncated":
                write(images, gzip.compress(idx((6, 28, 28)))[:300], gz=False)
            elif kind == "magic":
                write(images, idx((6, 28, 28), magic=b"\x01\x02\x08\x03"))
    return setup


def run_files(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """A setup that changes the row's copy of the trained run, ``d/run``."""
    return lambda d: change(d / "run")


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def flip_header_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    data[8 + header_len // 2] ^= 0x5A  # inside the JSON header
    path.write_bytes(bytes(data))


def flip_weight_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        meta = json.loads((run / "config.json").read_text())
        change(meta)
        (run / "config.json").write_text(json.dumps(meta))
    return edit


def retag_model(run: Path) -> None:
    """Rewrite model.safetensors with a valid checksum but a model configuration its tensors do not fit."""
    tensors, metadata = checkpoint._read(run / "model.safetensors")
    config = json.loads(metadata["model"])
    checkpoint._write(run / "model.safetensors", tensors, {"model": json.dumps({**config, "input_size": 56})})


def pickled_run(name: str, *, zip_format: bool) -> Callable[[Path], None]:
    return run_files(lambda run: pickle_checkpoint(run / name, run.parent / "PWNED", zip_format=zip_format))


class TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises 100,000 bytes, sends 1,000, then drops the connection."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"x" * 998)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


# --- the catalogue --------------------------------------------------------------------------------

@dataclass
class Row:
    id: str
    argv: list[str]  # {d}: the row's directory, {port}: the truncating HTTP server
    message: str = ""  # in the one stderr line
    setup: Callable[[Path], None] | None = None
    code: int = 2
    run: bool = False  # the row's directory holds a copy of a trained run, d/run
    env: dict[str, str] = field(default_factory=dict)
    may_write: tuple[str, ...] = ()  # paths under d the command may create or change


def train(*args: str) -> list[str]:
    return ["train", "lenet", *args, "--out", "{d}/out"]


ROWS = [
    # data
    Row("data-missing-dir", train("--data-dir", "{d}/nowhere"), "does not exist or is not a directory"),
    Row("data-truncated-gz", train("--data-dir", "{d}/data"), "corrupt or truncated gzip file", data_dir("truncated")),
    Row("data-wrong-magic", train("--data-dir", "{d}/data"), "not an IDX file (magic 0x01020803", data_dir("magic")),
    Row("data-count-mismatch", train("--data-dir", "{d}/data"), "has 6 images but", data_dir("count")),
    Row("data-label-out-of-range", train("--data-dir", "{d}/data"), "label 12 at index 5 is outside 0..9",
        data_dir("label")),
    Row("data-image-size", train("--data-dir", "{d}/data"), "images are 32x32, expected 28x28", data_dir("size")),
    Row("data-no-images", train("--data-dir", "{d}/data"), "the training split has 0 images", data_dir("empty")),
    Row("data-checksum", ["data", "check", "--data-dir", str(SLICE)], "checksum mismatch"),
    Row("download-checksum", ["data", "fetch", "--dest", "{d}/dest", "--mirror", SLICE.as_uri() + "/"],
        "does not match the expected checksum", may_write=("dest",)),
    Row("download-interrupted", ["data", "fetch", "--dest", "{d}/dest", "--mirror", "http://127.0.0.1:{port}/"],
        "train-images-idx3-ubyte.gz", may_write=("dest",)),
    # the command line
    Row("cli-unknown-model", ["train", "lenett", "--out", "{d}/out"], "unknown model 'lenett'; did you mean lenet"),
    Row("cli-input-too-small", ["train", "alexnet", "--resize", "28", "--out", "{d}/out", "--data-dir", str(SLICE)],
        "input 28x28 is too small for alexnet"),
    Row("cli-zero-epochs", train("--epochs", "0"), "--epochs must be at least 1, got 0"),
    Row("cli-negative-batch-size", train("--batch-size", "-4"), "--batch-size must be at least 1, got -4"),
    Row("cli-nan-lr", train("--lr", "nan"), "--lr must be a positive number, got nan"),
    Row("cli-negative-lr", train("--lr", "-0.1"), "--lr must be a positive number, got -0.1"),
    Row("cli-not-a-number", train("--epochs", "ten"), "expected an integer, got 'ten'"),
    Row("cli-no-cuda", train("--device", "cuda", "--data-dir", str(SLICE)), "CUDA is not available"),
    Row("cli-unknown-device", train("--device", "tpu"), "--device must be auto, cpu, cuda, cuda:N or mps"),
    Row("cli-out-exists", ["train", "lenet", "--out", "{d}/run"], "already exists; use --resume", run=True),
    Row("cli-resume-other-model", ["train", "vgg11", "--resume", "{d}/run"], "is a run of lenet, not vgg11", run=True),
    Row("cli-resume-other-format", ["train", "--resume", "{d}/run"], "is of format 'convzoo-0', this convzoo reads",
        run_files(edit_config(lambda m: m.update(format="convzoo-0"))), run=True),
    Row("cli-eval-other-format", ["eval", "{d}/run"], "is of format 'convzoo-0', this convzoo reads",
        run_files(edit_config(lambda m: m.update(format="convzoo-0"))), run=True),
    Row("cli-resume-changes-recipe", ["train", "--resume", "{d}/run", "--batch-size", "64"],
        "--batch-size cannot change", run=True),
    Row("cli-resume-shortens-run", ["train", "--resume", "{d}/run", "--epochs", "1"],
        "has completed 2 epochs; --epochs 1 cannot shorten it", run=True),
    Row("cli-eval-not-a-run", ["eval", "{d}"], "is not a convzoo run directory (no config.json)"),
    Row("cli-bad-distributed-env", train("--data-dir", str(SLICE)), "RANK and WORLD_SIZE must both be integers",
        env={"RANK": "zero", "WORLD_SIZE": "2"}),
    Row("cli-bad-dist-timeout", train("--data-dir", str(SLICE)), "CONVZOO_DIST_TIMEOUT must be a positive number",
        env={"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "CONVZOO_DIST_TIMEOUT": "-5"}),
    # checkpoints
    Row("ckpt-truncated", ["eval", "{d}/run"], "model.safetensors is not a readable safetensors file",
        run_files(lambda r: truncate(r / "model.safetensors")), run=True),
    Row("ckpt-corrupt-header", ["eval", "{d}/run"], "model.safetensors is not a readable safetensors file",
        run_files(lambda r: flip_header_byte(r / "model.safetensors")), run=True),
    Row("ckpt-corrupt-weights", ["eval", "{d}/run"], "is corrupt: its tensors do not match the checksum",
        run_files(lambda r: flip_weight_bit(r / "model.safetensors")), run=True),
    Row("ckpt-tampered-config-json", ["eval", "{d}/run"], "has an invalid training configuration",
        run_files(edit_config(lambda m: m["config"].update(epochs="ten"))), run=True),
    Row("ckpt-broken-config-json", ["eval", "{d}/run"], "config.json is not valid JSON",
        run_files(lambda r: truncate(r / "config.json")), run=True),
    Row("ckpt-tampered-model-config", ["eval", "{d}/run"], "the files come from different runs",
        run_files(retag_model), run=True),
    Row("ckpt-truncated-resume", ["train", "--resume", "{d}/run", "--epochs", "3"],
        "checkpoint.safetensors is not a readable safetensors file",
        run_files(lambda r: truncate(r / "checkpoint.safetensors")), run=True),
    Row("pickle-as-model-eval", ["eval", "{d}/run"], "is a pickle-based PyTorch file",
        pickled_run("model.safetensors", zip_format=True), run=True),
    Row("pickle-as-model-predict", ["predict", "{d}/run", "{d}/rgb.png"], "is a pickle-based PyTorch file",
        lambda d: (pickled_run("model.safetensors", zip_format=False)(d), images_of_every_kind(d)), run=True),
    Row("pickle-as-model-export", ["export", "{d}/run"], "model.safetensors is a pickle-based PyTorch file",
        pickled_run("model.safetensors", zip_format=True), run=True),
    Row("pickle-as-model-show", ["show", "kernels", "{d}/run"], "model.safetensors is a pickle-based PyTorch file",
        pickled_run("model.safetensors", zip_format=False), run=True),
    Row("pickle-as-model-report", ["report", "{d}/run"], "model.safetensors is a pickle-based PyTorch file",
        pickled_run("model.safetensors", zip_format=True), run=True),
    Row("pickle-pt-path-eval", ["eval", "{d}/run/model.pt"], "model.pt is a pickle-based PyTorch file",
        pickled_run("model.pt", zip_format=True), run=True),
    Row("pickle-pt-path-predict", ["predict", "{d}/run/model.pt", "{d}/rgb.png"], "is a pickle-based PyTorch file",
        lambda d: (pickled_run("model.pt", zip_format=False)(d), images_of_every_kind(d)), run=True),
    Row("pickle-as-checkpoint-resume", ["train", "--resume", "{d}/run", "--epochs", "3"],
        "checkpoint.safetensors is a pickle-based PyTorch file",
        pickled_run("checkpoint.safetensors", zip_format=False), run=True),
    # predict
    Row("image-missing", ["predict", "{d}/run", "{d}/nothing.png"], "nothing.png: no such file", run=True),
    Row("image-not-an-image", ["predict", "{d}/run", "{d}/notes.png"], "not an image convzoo reads",
        lambda d: (d / "notes.png").write_text("shopping list: shoes\n"), run=True),
    Row("image-corrupt-png", ["predict", "{d}/run", "{d}/broken.png"], "corrupt or truncated image",
        lambda d: (images_of_every_kind(d), truncate(d / "rgb.png", 0.6), (d / "rgb.png").rename(d / "broken.png")),
        run=True),
    Row("image-over-limit", ["predict", "{d}/run", "{d}/big.png"], "8000x8000 pixels is larger than the limit",
        lambda d: (d / "big.png").write_bytes(png_header(8000, 8000)), run=True),
    Row("image-decompression-bomb", ["predict", "{d}/run", "{d}/bomb.png"], "decompression bomb guard",
        lambda d: (d / "bomb.png").write_bytes(png_header(100_000, 100_000)), run=True),
    Row("image-every-mode", ["predict", "{d}/run", *(f"{{d}}/{n}" for n in (
        "rgb.png", "rgba.png", "la.png", "gray16.png", "palette.gif", "cmyk.jpg", "bilevel.png"))], code=0,
        setup=images_of_every_kind, run=True),
    # faults during training
    Row("diverged", ["train", "--resume", "{d}/run", "--epochs", "3", "--lr", "1e38"],
        "the training loss became", code=3, run=True, may_write=("run/config.json",)),
    Row("not-learning", ["train", "lenet", "--lr", "5", "--epochs", "2", "--limit-train", "512", "--limit-test", "200",
                         "--data-dir", str(SLICE), "--out", "{d}/out"],
        "warning: lenet is not learning: test accuracy has stayed at chance", code=0, may_write=("out",)),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Row, Path, dict, dict, dict]]:
    """Every row, run at once: {id: (row, its directory, result, files before, files after)}."""
    root = tmp_path_factory.mktemp("catalogue")
    template = train_run(root / "template", epochs=2, limit_train=256)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TruncatingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    jobs, befores = [], []
    for row in ROWS:
        d = root / row.id
        d.mkdir()
        if row.run:
            shutil.copytree(template, d / "run")
        if row.setup:
            row.setup(d)
        befores.append(snapshot(d))
        argv = [a.replace("{d}", str(d)).replace("{port}", str(server.server_address[1])) for a in row.argv]
        # The cache is outside the row's directory: libraries keep files there (onnxruntime does).
        jobs.append({"argv": argv, "cwd": str(d), "env": {**ENV, "HOME": str(d), "XDG_CACHE_HOME": str(root / "cache"),
                                                          **row.env}})
    try:
        results = run_forked(jobs)
    finally:
        server.shutdown()
    return {row.id: (row, root / row.id, result, before, snapshot(root / row.id))
            for row, result, before in zip(ROWS, results, befores)}


def run_forked(jobs: list[dict]) -> list[dict]:
    proc = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(jobs), capture_output=True, text=True,
                          timeout=300, env={**ENV, "HOME": os.environ.get("HOME", "/tmp")})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("row_id", [row.id for row in ROWS])
def test_catalogue_row(row_id: str, outcomes: dict) -> None:
    row, d, result, before, after = outcomes[row_id]
    if row_id == "cli-no-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert result["code"] == row.code, result
    assert "Traceback" not in result["stderr"]
    lines = result["stderr"].splitlines()
    if row.code:
        assert len(lines) == 1 and lines[0].startswith("error: "), result["stderr"]
    assert row.message in result["stderr"], result["stderr"]
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    unexpected = {p for p in changed if not any(p == w or p.startswith(w + "/") for w in row.may_write)}
    assert not unexpected, f"{row_id} wrote {sorted(unexpected)}"
    assert not temporary_files(d)


def test_failed_downloads_leave_no_file(outcomes: dict) -> None:
    for row_id in ("download-checksum", "download-interrupted"):
        dest = outcomes[row_id][1] / "dest"
        assert dest.is_dir() and list(dest.iterdir()) == [], row_id


def test_a_diverged_run_keeps_its_last_good_checkpoint(outcomes: dict) -> None:
    row, d, result, before, after = outcomes["diverged"]
    assert "in epoch 3 (by step" in result["stderr"] and "likely too high for lenet" in result["stderr"]
    assert "--lr 1e+37" in result["stderr"] and "keeps 2 completed epochs" in result["stderr"]
    assert "--resume" in result["stderr"]
    assert before["run/checkpoint.safetensors"] == after["run/checkpoint.safetensors"]
    model = create_model("lenet")
    assert load_state(d / "run" / "checkpoint.safetensors", model, make_optimizer(model, recipe("lenet")))[0] == 2
    assert len((d / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_the_loss_is_checked_every_step_on_the_cpu_and_every_50_on_a_gpu() -> None:
    assert divergence_check_interval(torch.device("cpu")) == 1
    assert divergence_check_interval(torch.device("cuda", 0)) == 50  # reading it would wait for the GPU


def test_not_learning_is_a_warning_only(outcomes: dict) -> None:
    row, d, result, before, after = outcomes["not-learning"]
    lines = result["stderr"].splitlines()
    assert all(line.startswith("warning: ") for line in lines) and len(lines) == 2
    assert "(e.g. --lr 0.5) or use --recipe fast" in lines[0] and (d / "out" / "model.safetensors").is_file()
    assert lines[1].startswith("warning: lenet finished at chance")  # said again at the end, never silently
    assert json.loads((d / "out" / "result.json").read_text())["learned"] is False


def test_every_image_mode_is_classified(outcomes: dict) -> None:
    result = outcomes["image-every-mode"][2]
    assert result["stderr"] == "" and len(result["stdout"].splitlines()) == 7


@pytest.mark.slow
def test_runner_matches_a_fresh_interpreter(outcomes: dict) -> None:
    ids = ("cli-unknown-model", "pickle-as-model-eval", "image-every-mode")
    procs = []
    for row_id in ids:
        row, d, *_ = outcomes[row_id]
        argv = [a.replace("{d}", str(d)) for a in row.argv]
        procs.append(subprocess.Popen([sys.executable, "-m", "convzoo", *argv], cwd=d, text=True,
                                      env={**ENV, "HOME": str(d)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for row_id, proc in zip(ids, procs):
        out, err = proc.communicate(timeout=120)
        result = outcomes[row_id][2]
        assert (proc.returncode, out, err) == (result["code"], result["stdout"], result["stderr"]), row_id


# --- a malicious pickle --------------------------------------------------------------------------

def test_the_pickle_payload_is_live(tmp_path: Path) -> None:
    """The payload the rows use does run when unpickled, so its absence there means it was never unpickled."""
    marker = tmp_path / "ran"
    pickle.loads(pickle_checkpoint(tmp_path / "evil.pt", marker, zip_format=False).read_bytes())["state"].close()
    assert marker.exists()
    marker.unlink()
    torch.load(pickle_checkpoint(tmp_path / "evil.pt", marker, zip_format=True), weights_only=False)["config"].close()
    assert marker.exists()


def test_a_malicious_pickle_never_runs(outcomes: dict, tmp_path: Path) -> None:
    for row_id in [row.id for row in ROWS if row.id.startswith("pickle-")]:
        assert "PWNED" not in {p.name for p in outcomes[row_id][1].rglob("*")}, row_id
    # The library too: both loaders, given either kind of pickle under either name.
    marker = tmp_path / "PWNED"
    model = create_model("lenet")
    for zip_format in (True, False):
        for name in ("model.safetensors", "model.pt"):
            path = pickle_checkpoint(tmp_path / name, marker, zip_format=zip_format)
            with pytest.raises(CheckpointError, match="pickle-based"):
                load_model(path)
            with pytest.raises(CheckpointError, match="pickle-based"):
                load_state(path, model, make_optimizer(model, recipe("lenet")))
    assert not marker.exists()


# --- interruption ----------------------------------------------------------------------------------

def start_training(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convzoo", "train", "lenet", *TRAIN, "--out", str(out), *args],
                            env={**ENV, "HOME": str(out.parent)}, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_training_cleanly(sig: signal.Signals, code: int, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_training(out, "--epochs", "100")
    wait_for(out / "checkpoint.safetensors", proc)
    time.sleep(0.05)  # into the next epoch
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    epochs = checkpoint.saved_epoch(out / "checkpoint.safetensors")
    assert stderr.startswith(f"error: interrupted by {sig.name}; {out} keeps {epochs} completed epoch")
    assert stderr.rstrip().endswith(f"continue with: convzoo train --resume {out}")
    model = create_model("lenet")
    assert load_state(out / "checkpoint.safetensors", model, make_optimizer(model, recipe("lenet")))[0] == epochs >= 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == epochs  # the two files agree
    assert not (out / "model.safetensors").exists() and not temporary_files(out)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    epochs = 4
    reference = train_run(tmp_path / "straight", epochs=epochs, limit_train=None, deterministic=True)
    out = tmp_path / "killed"
    proc = start_training(out, "--epochs", str(epochs), "--deterministic")
    wait_for(out / "checkpoint.safetensors", proc)
    time.sleep(0.1)  # an epoch takes ~0.3 s: this is in the middle of the second
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (out / "model.safetensors").exists()
    resumed = subprocess.run([sys.executable, "-m", "convzoo", "train", "--resume", str(out)], capture_output=True,
                             text=True, env={**ENV, "HOME": str(tmp_path)}, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} after epoch" in resumed.stdout and "after epoch 0" not in resumed.stdout
    a = load_model(reference / "model.safetensors").state_dict()
    b = load_model(out / "model.safetensors").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert json.loads((out / "config.json").read_text())["config"]["threads"] == 1


# --- fuzzing the loaders ---------------------------------------------------------------------------
# (The IDX reader is fuzzed in tests/test_idx.py: test_read_idx_random_bytes and its neighbours.)

@pytest.fixture(scope="module")
def saved_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("saved")
    model = create_model("lenet_bn")
    optimizer = make_optimizer(model, recipe("lenet_bn", optimizer="adamw"))
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    save_model(root / "model.safetensors", model)
    row = {"epoch": 1, "train_loss": 2.0, "train_acc": 0.1, "test_acc": 0.1, "seconds": 1.0, "eval_seconds": 0.1}
    save_state(root / "checkpoint.safetensors", model, optimizer, epoch=1, history=[row])
    return {name: (root / name).read_bytes() for name in ("model.safetensors", "checkpoint.safetensors")}


@pytest.fixture(scope="module")
def saved_weights(saved_files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The weights both saved files hold, as the loaders give them back from the undamaged files."""
    root = tmp_path_factory.mktemp("undamaged")
    loaded = []
    for name, data in saved_files.items():
        (root / name).write_bytes(data)
        loaded += load_both(root / name)
    assert len(loaded) == 2  # the model file opens with load_model, the checkpoint with load_state, not the other
    assert_holds_the_saved_weights(loaded, loaded[0])
    return loaded[0]


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """Flip, overwrite, cut or insert bytes; half the edits land in the first 300 bytes (the headers)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        near = draw(st.booleans())
        pos = draw(st.integers(0, max(min(len(out), 300 if near else len(out)) - 1, 0)))
        if op == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[pos:]
        else:
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


def load_both(path: Path) -> list[dict[str, torch.Tensor]]:
    """Open ``path`` with both loaders; the weights each loader that accepted it holds (anything but
    ``CheckpointError`` escapes)."""
    def restore(p: Path) -> torch.nn.Module:
        model = create_model("lenet_bn")
        load_state(p, model, make_optimizer(model, recipe("lenet_bn", optimizer="adamw")))
        return model

    accepted = []
    for load in (load_model, restore):
        try:
            accepted.append(load(path).state_dict())
        except CheckpointError:
            pass
    return accepted


def assert_holds_the_saved_weights(accepted: list[dict[str, torch.Tensor]], saved: dict[str, torch.Tensor]) -> None:
    """A damaged file may be accepted only when what it gives back is what was saved, to the bit."""
    for weights in accepted:
        assert weights.keys() == saved.keys()
        changed = [k for k in saved if weights[k].dtype != saved[k].dtype or not torch.equal(weights[k], saved[k])]
        assert not changed, f"accepted a file whose weights differ from those saved: {changed}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data(), name=st.sampled_from(["model.safetensors", "checkpoint.safetensors"]))
def test_mutated_checkpoints_raise_only_checkpoint_error(saved_files, saved_weights, tmp_path, draw, name) -> None:
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(mutate(saved_files[name], draw.draw))
    assert_holds_the_saved_weights(load_both(path), saved_weights)


# Tampering that keeps the file well-formed and its checksum valid: only the loaders' checks stand.
METADATA_VALUES = st.one_of(
    st.just("{}"), st.just("[]"), st.just("null"), st.just('"x"'), st.just("-1"), st.just("1e400"),
    st.just('{"name": "lenet_bn", "input_size": 100000}'), st.just('{"name": "resnet18"}'),
    st.just('{"state": {"0": {"step": "many"}}}'), st.just('{"state": {"99": {}}}'),
    st.just('[{"epoch": 1}]'), st.text(max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data(), name=st.sampled_from(["model.safetensors", "checkpoint.safetensors"]))
def test_tampered_but_well_formed_checkpoints_raise_only_checkpoint_error(saved_files, saved_weights, tmp_path, draw,
                                                                          name) -> None:
    source = tmp_path / "source.safetensors"
    source.write_bytes(saved_files[name])
    tensors, metadata = checkpoint._read(source)
    for _ in range(draw.draw(st.integers(1, 3))):
        key = draw.draw(st.sampled_from(sorted(tensors)))
        change = draw.draw(st.sampled_from(["metadata", "drop", "reshape", "retype", "rename"]))
        if change == "metadata":
            metadata[draw.draw(st.sampled_from(sorted(metadata)))] = draw.draw(METADATA_VALUES)
        elif change == "drop":
            tensors.pop(key, None)
        elif key in tensors and change == "reshape":
            tensors[key] = torch.zeros(draw.draw(st.lists(st.integers(0, 3), max_size=3)), dtype=tensors[key].dtype)
        elif key in tensors and change == "retype":
            tensors[key] = tensors[key].to(draw.draw(st.sampled_from([torch.float16, torch.int64, torch.uint8])))
        elif key in tensors:
            tensors[draw.draw(st.sampled_from(["optim.7.x", "optim.-1.exp_avg", "model.extra", "rng.cuda.0"]))] = \
                tensors.pop(key)
    metadata.pop("format", None)
    metadata.pop("sha256", None)
    path = tmp_path / "tampered.safetensors"
    checkpoint._write(path, tensors, metadata)
    # The checksum is rewritten, so a weight replaced by another of its shape and dtype is a valid file (the
    # checksum guards against corruption, not against someone rewriting the file): that one loads as written.
    prefix = "model." if name == "checkpoint.safetensors" else ""
    written = {key.removeprefix(prefix): t for key, t in tensors.items() if key.startswith(prefix)}
    expected = {key: written[key] if key in written and written[key].shape == saved.shape
                and written[key].dtype == saved.dtype else saved for key, saved in saved_weights.items()}
    assert_holds_the_saved_weights(load_both(path), expected)


@pytest.mark.parametrize("low_bytes", [b"\x80\x02", b"PK"])
def test_a_safetensors_header_length_that_looks_like_a_pickle_is_not_refused(tmp_path: Path, low_bytes: bytes) -> None:
    """The first bytes of a safetensors file are its header's length: they may read 0x80 0x02 or PK."""
    model, path = create_model("lenet"), tmp_path / "model.safetensors"

    def save(pad: int) -> int:  # the header's length
        checkpoint._write(path, dict(model.state_dict()), {"model": json.dumps(model.config), "pad": "x" * pad})
        return int.from_bytes(path.read_bytes()[:8], "little")

    low, base = int.from_bytes(low_bytes, "little"), save(0)
    target = low + -(-(base - low) // 65536) * 65536  # the first length >= base whose low bytes are low_bytes
    # One padding byte makes the header one byte longer, rounded up to a multiple of 8.
    assert any(save(pad) == target for pad in range(target - base - 8, target - base + 9))
    assert path.read_bytes()[:2] == low_bytes
    load_model(path)


@pytest.fixture(scope="module")
def image_files() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    files = []
    for fmt, image in [("PNG", Image.fromarray(pixels)), ("PNG", Image.fromarray(pixels).convert("LA")),
                       ("PNG", Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)),
                       ("JPEG", Image.fromarray(pixels)), ("GIF", Image.fromarray(pixels).convert("P")),
                       ("BMP", Image.fromarray(pixels)), ("TIFF", Image.fromarray(pixels[..., 0].astype(np.float32)))]:
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        files.append(buffer.getvalue())
    return files


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_mutated_images_raise_only_image_error(image_files, tmp_path, draw) -> None:
    path = tmp_path / "fuzzed"
    random_bytes = draw.draw(st.booleans())
    data = draw.draw(st.binary(max_size=300)) if random_bytes else mutate(draw.draw(st.sampled_from(image_files)),
                                                                          draw.draw)
    path.write_bytes(data)
    try:
        pixels = load_image(path)
    except ImageError:
        return
    assert pixels.dtype == torch.uint8 and pixels.shape == (28, 28)
