"""convzoo explore's application (src/convzoo/explore) through its routes, in-process (starlette's TestClient)
on the address an ExplorerServer bound on 127.0.0.1: the operations equal convzoo.ops and hand-computed
numbers, a run's answer equals api.load(run).predict, every security rule refuses with its status and one
line and the app keeps answering, receptive fields match the gradient's support. (The real socket: the slow
command test here and tests/test_explore_browser.py; uvicorn cannot serve mutmut's rewritten Guard.)"""

from __future__ import annotations

import base64
import http.client
import io
import json
import struct
import sys
import warnings
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("starlette", reason="needs the explore extra (pip install 'convzoo[explore]')")
pytest.importorskip("captum", reason="needs the explore extra (pip install 'convzoo[explore]')")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx")

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx is what is installed
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from convzoo import api, ops  # noqa: E402
from convzoo.data import load_split, to_input  # noqa: E402
from convzoo.explore import ExploreError, ExplorerServer  # noqa: E402
from convzoo.explore.receptive import receptive_fields  # noqa: E402
from convzoo.explore.uploads import MAX_UPLOAD_BYTES, UploadTooLarge, upload_pixels  # noqa: E402
from convzoo.models import create_model, list_models  # noqa: E402

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"


def lenet_run_dir(path: Path, classes: list[str] | None = None) -> Path:
    """A finished run directory of an untrained LeNet (seed 0) on the committed slice, its first 200 test images:
    what ``api.load`` reads, written in a second instead of trained (``classes``: its data's class names)."""
    from convzoo.checkpoint import save_model
    from convzoo.config import recipe
    from convzoo.rundir import write_config

    torch.manual_seed(0)
    config = recipe("lenet", data_dir=str(SLICE), device="cpu", limit_test=200)
    model = create_model("lenet", input_size=config.input_size).eval()
    write_config(path, config, model, torch.device("cpu"), "test")
    if classes is not None:
        meta = json.loads((path / "config.json").read_text())
        meta["data"]["classes"] = classes
        (path / "config.json").write_text(json.dumps(meta))
    save_model(path / "model.safetensors", model)
    row = {"epoch": 1, "train_loss": 2.3, "train_acc": 0.1, "seconds": 1.0, "test_acc": 0.1}
    (path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def lenet_dir(tmp_path_factory):
    return lenet_run_dir(tmp_path_factory.mktemp("lenet"))


@pytest.fixture(scope="module")
def lenet(lenet_dir, one_thread):
    return api.load(lenet_dir, "cpu")


# A new app for each test (a few milliseconds): mutmut runs a mutant of create_app or RunExplorer against the
# tests that build one, so every test that uses the app builds its own.
@pytest.fixture
def server(lenet):
    """The explorer of ``lenet_dir``, bound (its address known) but answered in-process."""
    explorer = ExplorerServer(lenet)
    yield explorer
    explorer.socket.close()


@pytest.fixture
def bare():
    """The explorer without a run: the operations alone."""
    explorer = ExplorerServer()
    yield explorer
    explorer.socket.close()


def call(server: ExplorerServer, method: str, path: str, body: bytes | dict | None = None, *, token: str | None = "",
         host: str | None = None, headers: dict | None = None) -> tuple[int, dict, object]:
    """One request through the app; returns ``(status, headers, JSON body or bytes)``."""
    sent = {"Host": host or f"127.0.0.1:{server.port}", **(headers or {})}
    if token is not None:
        sent["X-Explore-Token"] = token or server.token
    if isinstance(body, dict):
        body, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    client = TestClient(server.app, base_url=f"http://127.0.0.1:{server.port}", raise_server_exceptions=False,
                        follow_redirects=False)
    response = client.request(method, path, content=body, headers=sent)
    answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else \
        response.content
    return response.status_code, dict(response.headers), answer


def alive(server: ExplorerServer) -> None:
    status, _, info = call(server, "GET", "/api/info")
    assert status == 200 and info["run"]["model"] == "lenet"


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# --- the operations ----------------------------------------------------------------------------

def test_ops_equals_corr2d_and_gives_the_chapters_edge_answer(server):
    status, _, info = call(server, "GET", "/api/info")
    status, _, answer = call(server, "POST", "/api/ops", info["edge_example"])
    assert status == 200
    X, K = torch.tensor(info["edge_example"]["input"][0], dtype=torch.float64), torch.tensor([[1.0, -1.0]])
    assert answer["output"][0] == ops.corr2d(X, K).tolist()
    assert answer["output"][0][0] == [0, 1, 0, 0, 0, -1, 0]  # D2L 7.2.3: 1 for white to black, -1 back
    assert answer["formula"][1].endswith("= 7")
    assert "(8 + 2\u00b70 \u2212 1\u00b7(2\u22121) \u2212 1) / 1" in answer["formula"][1]


def test_ops_padding_stride_dilation_channels_and_pooling_equal_convzoo_ops(server):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-5, 6, (2, 9, 7), generator=g).double()
    k = torch.randint(-3, 4, (3, 2, 3, 2), generator=g).double()
    request = {"input": x.tolist(), "kernel": k.tolist(), "padding": 1, "stride": 2, "dilation": 2,
               "pool": {"mode": "max", "size": 2, "stride": 1}}
    status, _, answer = call(server, "POST", "/api/ops", request)
    assert status == 200
    expected = ops.conv2d(x[None], k, padding=1, stride=2, dilation=2)[0]
    assert torch.equal(torch.tensor(answer["output"], dtype=torch.float64), expected)
    assert answer["shape"]["output"] == list(expected.shape)
    partials = torch.tensor(answer["partials"], dtype=torch.float64)  # (C_out, C_in, H, W): the multi-channel sum
    assert partials.shape[:2] == (3, 2) and torch.equal(partials.sum(dim=1), expected)
    assert torch.equal(torch.tensor(answer["pooled"], dtype=torch.float64), ops.max_pool2d(expected[None], 2, 1)[0])


def test_ops_padding_1_stride_2_is_corr2d_on_the_padded_input_every_other_cell(server):
    x, k = torch.arange(30.0).reshape(5, 6) % 7, torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.5, -2.0]])
    status, _, answer = call(server, "POST", "/api/ops", {"input": [x.tolist()], "kernel": [[k.tolist()]],
                                                         "padding": 1, "stride": 2})
    assert status == 200
    assert answer["output"][0] == ops.corr2d(F.pad(x, (1, 1, 1, 1)), k)[::2, ::2].tolist()


def test_a_1x1_convolution_mixes_channels_per_pixel(server):
    x, k = torch.rand(3, 4, 4, dtype=torch.float64), torch.rand(2, 3, 1, 1, dtype=torch.float64)
    status, _, answer = call(server, "POST", "/api/ops", {"input": x.tolist(), "kernel": k.tolist()})
    assert status == 200
    expected = torch.einsum("oc,chw->ohw", k[:, :, 0, 0], x)
    assert torch.allclose(torch.tensor(answer["output"], dtype=torch.float64), expected)


# --- a run -------------------------------------------------------------------------------------

def test_a_test_image_gets_the_runs_own_prediction(server, lenet_dir):
    status, _, answer = call(server, "POST", "/api/analyze?test=7&channels=4")
    assert status == 200
    run = api.load(lenet_dir, "cpu")
    images, labels = load_split("test", run.config.data_dir)
    expected = run.predict(images[7:8], top_k=5)[0]
    assert [t["label"] for t in answer["top"]] == [label for label, _ in expected.top_labels]
    assert [t["probability"] for t in answer["top"]] == pytest.approx([p for _, p in expected.top_labels], abs=1e-6)
    assert answer["truth"]["label"] == int(labels[7])
    names = [layer["name"] for layer in answer["layers"]]
    assert names == ["0", "2", "3", "5"]  # LeNet's two convolutions and two poolings
    first = answer["layers"][0]
    assert first["shape"] == [6, 28, 28] and first["shown"] == [4, 28, 28]
    assert len(base64.b64decode(first["data"])) == 4 * 28 * 28
    status, _, explained = call(server, "POST", f"/api/explain?test=7&target={expected.label}")
    assert status == 200 and explained["method"] == "gradcam" and explained["target"] == expected.label
    assert len(base64.b64decode(explained["data"])) == 28 * 28


def test_the_gradient_saliency_is_the_absolute_input_gradient_of_the_class_asked(server, lenet_dir):
    status, _, answer = call(server, "POST", "/api/explain?test=3&map=gradient&target=4")
    assert status == 200 and answer["method"] == "gradient" and answer["class"] == "Coat"
    run = api.load(lenet_dir, "cpu")
    x = to_input(load_split("test", run.config.data_dir)[0][3:4], run.config.input_size).requires_grad_()
    run.model(x)[0, 4].backward()
    grad = x.grad[0, 0].abs()
    shown = torch.frombuffer(bytearray(base64.b64decode(answer["data"])), dtype=torch.uint8)
    expected = (grad - grad.min()) / (grad.max() - grad.min()) * 255
    assert (shown.float().view(28, 28) - expected).abs().max() <= 1.0


def test_an_uploaded_image_gets_the_prediction_of_the_same_file(server, lenet_dir, tmp_path):
    image = Image.new("L", (120, 90), 255)
    image.paste(0, (30, 20, 90, 70))  # a dark box on white: inverted by both doors alike
    path = tmp_path / "box.png"
    image.save(path)
    status, _, answer = call(server, "POST", "/api/analyze", path.read_bytes(), headers={"Content-Type": "image/png"})
    assert status == 200
    expected = api.load(lenet_dir, "cpu").predict(str(path), top_k=5)[0]
    assert [t["label"] for t in answer["top"]] == [label for label, _ in expected.top_labels]
    assert answer["unlike_training_data"] == expected.unlike_training_data


def test_the_kernels_are_a_png_drawn_by_convzoo_figures(server):
    status, headers, body = call(server, "GET", "/api/kernels.png")
    assert status == 200 and headers["content-type"] == "image/png" and body[:8] == b"\x89PNG\r\n\x1a\n"


BIG = {"alexnet", "vgg11", "vgg11_small"}  # a second or more each on two shared cores


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in list_models()])
def test_every_model_of_the_zoo_can_be_explored(name, tmp_path, one_thread):
    """An untrained network of each registered model: its prediction, bounded maps, fields and a Grad-CAM map."""
    from convzoo.config import recipe
    from convzoo.explore.network import MAX_CHANNELS, MAX_LAYERS, MAX_SIDE, RunExplorer
    from convzoo.rundir import write_config

    config = recipe(name, data_dir=str(Path(__file__).parent / "data" / "fashion-mnist-slice"), device="cpu")
    model = create_model(name, input_size=config.input_size).eval()
    write_config(tmp_path, config, model, torch.device("cpu"), "test")  # what a run directory holds: its classes
    explorer = RunExplorer(api.Run(tmp_path, config, model, torch.device("cpu")))
    pixels, label = explorer.test_image(5)
    answer = explorer.analyze(pixels, channels=MAX_CHANNELS, label=label)
    assert answer["top"][0]["label"] == api.Run(tmp_path, config, model, torch.device("cpu")).predict(pixels)[0].label
    assert 1 <= len(answer["layers"]) <= MAX_LAYERS
    assert all(max(layer["shown"][1:]) <= MAX_SIDE and layer["shown"][0] <= MAX_CHANNELS for layer in answer["layers"])
    info = explorer.info()
    assert all(layer["field"]["size"] >= 1 for layer in info["layers"])
    assert len(base64.b64decode(explorer.explain(pixels, 3)["data"])) == config.input_size**2


def test_grad_cam_units_sit_at_the_centres_of_their_receptive_fields():
    from convzoo.explore.network import _on_input
    from convzoo.explore.receptive import Field

    same = torch.rand(28, 28)
    assert torch.allclose(_on_input(same, Field(0, 1, 1), 28), same, atol=1e-6)  # the input's own grid: unchanged
    cam = torch.zeros(10, 10)
    cam[0, 3] = 1.0  # LeNet's second conv: unit (0, 3) sees rows -2..11, columns 4..17, centred at (4.5, 10.5)
    placed = _on_input(cam, Field(-2, 14, 2), 28)
    assert placed[:5, 10].tolist() == pytest.approx([0.75, 0.75, 0.75, 0.75, 0.75])  # rows 0..4: the edge unit
    assert placed[4, 10] == placed[4, 11] and placed[4].argmax() in (10, 11)


# --- security ----------------------------------------------------------------------------------

def _bomb_png(side: int) -> bytes:
    """A PNG header declaring ``side x side`` pixels, followed by a little data: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


REFUSALS = {
    "no token": (403, dict(method="GET", path="/api/info", token=None)),
    "wrong token": (403, dict(method="GET", path="/api/info", token="x" * 43)),
    "wrong token in the address": (403, dict(method="GET", path="/?token=guess", token=None)),
    "wrong Host": (403, dict(method="GET", path="/api/info", host="evil.example:80")),
    "rebound Host": (403, dict(method="GET", path="/api/info", host="attacker.example")),
    "another site's Origin": (403, dict(method="POST", path="/api/ops", body={"input": [[[1]]], "kernel": [[[[1]]]]},
                                        headers={"Origin": "http://evil.example"})),
    "declared body over the limit": (413, dict(method="POST", path="/api/analyze", body=b"x" * 10,
                                               headers={"Content-Length": str(MAX_UPLOAD_BYTES + 1)})),
    "a bomb image": (413, dict(method="POST", path="/api/analyze", body=_bomb_png(20_000))),
    "not an image": (400, dict(method="POST", path="/api/analyze", body=b"#!/bin/sh\nrm -rf /\n")),
    "a path in a field": (400, dict(method="POST", path="/api/ops",
                                    body={"input": "/etc/passwd", "kernel": [[[[1]]]]})),
    "a path as a parameter": (400, dict(method="POST", path="/api/analyze?path=/etc/passwd")),
    "a path as the test index": (400, dict(method="POST", path="/api/analyze?test=../../etc/passwd")),
    "a test index out of range": (400, dict(method="POST", path="/api/analyze?test=999999")),
    "an unknown map": (400, dict(method="POST", path="/api/explain?test=0&target=1&map=../../etc")),
    "a class that does not exist": (400, dict(method="POST", path="/api/explain?test=0&target=10")),
    "no class to explain": (400, dict(method="POST", path="/api/explain?test=0")),
    "too many channels": (400, dict(method="POST", path="/api/analyze?test=0&channels=99")),
    "a grid over the limit": (400, dict(method="POST", path="/api/ops",
                                        body={"input": [[[0] * 17] * 17], "kernel": [[[[1]]]]})),
    "a kernel over the limit": (400, dict(method="POST", path="/api/ops",
                                          body={"input": [[[0] * 9] * 9], "kernel": [[[[1] * 8] * 8]]})),
    "a stride out of bounds": (400, dict(method="POST", path="/api/ops",
                                         body={"input": [[[0]]], "kernel": [[[[1]]]], "stride": 10**9})),
    "a kernel larger than the input": (400, dict(method="POST", path="/api/ops",
                                                 body={"input": [[[0, 0]]], "kernel": [[[[1, 1, 1]]]]})),
    "ragged rows": (400, dict(method="POST", path="/api/ops", body={"input": [[[0, 0], [0]]], "kernel": [[[[1]]]]})),
    "an unknown field": (400, dict(method="POST", path="/api/ops", body={"input": [[[0]]], "kernel": [[[[1]]]],
                                                                         "file": "/etc/passwd"})),
    "not JSON": (400, dict(method="POST", path="/api/ops", body=b"{not json")),
    "JSON nested deeper than Python recurses": (400, dict(method="POST", path="/api/ops", body=b"[" * 60_000)),
    "a boolean as a number": (400, dict(method="POST", path="/api/ops",
                                        body={"input": [[[True]]], "kernel": [[[[1]]]]})),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_bad_request_is_refused_with_its_status_and_one_line_and_the_server_goes_on(server, case):
    expected, request = REFUSALS[case]
    status, _, answer = call(server, **request)
    assert status == expected, answer
    assert isinstance(answer, dict) and answer["error"] and "\n" not in answer["error"]
    assert "Traceback" not in answer["error"]
    alive(server)


def test_the_address_with_the_secret_sets_a_strict_cookie_that_opens_the_page(server):
    status, headers, _ = call(server, "GET", f"/?token={server.token}", token=None)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, page = call(server, "GET", "/", token=None, headers={"Cookie": cookie.split(";")[0]})
    assert status == 200 and b'<script src="/static/explore.js"' in page and b"<script>" not in page
    assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in headers[
        "content-security-policy"]
    status, _, _ = call(server, "GET", "/static/explore.js", token=None, headers={"Cookie": "convzoo_explore=guess"})
    assert status == 403


def test_uploads_are_capped_before_decoding():
    with pytest.raises(UploadTooLarge, match="limit"):
        upload_pixels(b"\0" * (MAX_UPLOAD_BYTES + 1))
    with pytest.raises(UploadTooLarge, match="pixels"):
        upload_pixels(_bomb_png(5000))
    assert upload_pixels(png(Image.new("L", (3, 5), 0))).shape == (1, 28, 28)


def test_another_address_needs_allow_remote_and_every_address_is_refused(run_cli):
    with pytest.raises(ExploreError, match="--allow-remote"):
        ExplorerServer(host="192.0.2.1")
    with pytest.raises(ExploreError, match="every address"):
        ExplorerServer(host="0.0.0.0", allow_remote=True)
    code, out, err = run_cli("explore", "--host", "192.0.2.1")
    assert code == 2 and err.startswith("error: ") and "--allow-remote" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_the_command_prints_its_address_and_serves_until_stopped(tmp_path):
    """``convzoo explore`` as a user starts it: the printed address opens, SIGTERM ends it."""
    import os
    import re
    import signal
    import subprocess

    src = Path(__file__).resolve().parents[1] / "src"
    process = subprocess.Popen([sys.executable, "-m", "convzoo", "explore"], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(src), "HOME": str(tmp_path)})
    try:
        first = process.stdout.readline() + process.stdout.readline()
        found = re.search(r"open http://127\.0\.0\.1:(\d+)/\?token=(\S+)", first)
        assert found, first + process.stderr.read()
        port, token = int(found.group(1)), found.group(2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/info", headers={"X-Explore-Token": token})
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["run"] is None
        conn.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert "Traceback" not in process.stderr.read()


def test_without_the_explore_extra_the_command_says_what_to_install(run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "convzoo.explore", None)  # as if starlette were missing
    code, _, err = run_cli("explore")
    assert code == 2 and "pip install 'convzoo[explore]'" in err and len(err.splitlines()) == 1


# --- receptive fields --------------------------------------------------------------------------

def test_lenets_receptive_fields_by_hand():
    fields = receptive_fields(create_model("lenet"))
    # conv 5x5 pad 2 -> pool 2/2 -> conv 5x5 -> pool 2/2
    assert [(fields[n].start, fields[n].size, fields[n].jump) for n in ("0", "2", "3", "5")] == [
        (-2, 5, 1), (-2, 6, 2), (-2, 14, 2), (-2, 16, 4)]


@pytest.mark.parametrize("name, size", [("lenet", 28), ("resnet18", 64), ("googlenet", 96), ("nin", 96)])
def test_receptive_fields_hold_every_input_pixel_a_unit_depends_on(name, size, one_thread):
    """The gradient of one unit reaches input pixels only inside its field (and, for a sigmoid network
    with positive weights, all of them)."""
    torch.manual_seed(0)
    model = create_model(name, input_size=size).double().eval()
    if name == "lenet":
        for p in model.parameters():
            p.data.abs_().add_(0.01)
    fields = receptive_fields(model)
    modules = dict(model.named_modules())
    layers = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)]
    for layer in layers[:: max(1, len(layers) // 6)]:
        out: dict[str, torch.Tensor] = {}
        handle = modules[layer].register_forward_hook(lambda _m, _a, o, out=out: out.__setitem__("y", o))
        x = torch.rand(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        model(x)
        handle.remove()
        y = out["y"]
        i, j = y.shape[2] // 2, y.shape[3] // 2
        y[0, :, i, j].sum().backward()
        rows = x.grad[0, 0].abs().sum(dim=1).nonzero().flatten()
        first, last = fields[layer].rows(i, i)
        assert first <= int(rows.min()) and int(rows.max()) <= last, layer
        if name == "lenet":
            assert (int(rows.min()), int(rows.max())) == (max(first, 0), min(last, size - 1)), layer


# --- the routes in-process, against numbers worked out by hand -----------------------------------------------

FORMULA = "\u230a({n} + 2\u00b7{p} \u2212 {d}\u00b7({k}\u22121) \u2212 1) / {s}\u230b + 1 = {out}"


def formula(axis: str, n: int, k: int, p: int, s: int, d: int, out: int) -> str:
    return (f"{axis}_out = \u230a({axis} + 2p \u2212 d(k\u22121) \u2212 1) / s\u230b + 1 = "
            + FORMULA.format(n=n, k=k, p=p, s=s, d=d, out=out))


def test_info_without_a_run_gives_the_limits_and_the_chapters_example(bare):
    status, headers, info = call(bare, "GET", "/api/info")
    assert status == 200 and headers["content-type"] == "application/json"
    assert info == {
        "limits": {"side": 16, "kernel": 7, "channels": 4, "padding": 4, "stride": 4, "dilation": 4, "pool": 4,
                   "magnitude": 1000.0, "channels_shown": 16, "upload_bytes": 4 * 1024 * 1024,
                   "upload_pixels": 16_000_000},
        "edge_example": {"input": [[[1, 1, 0, 0, 0, 0, 1, 1]] * 6], "kernel": [[[[1, -1]]]], "padding": 0,
                         "stride": 1, "dilation": 1, "pool": {"mode": "none", "size": 2, "stride": 2}},
        "run": None,
    }


def test_the_edge_example_by_hand(bare):
    _, _, info = call(bare, "GET", "/api/info")
    status, _, answer = call(bare, "POST", "/api/ops", info["edge_example"])
    assert status == 200
    assert answer == {
        "output": [[[0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]] * 6],
        "partials": [[[[0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]] * 6]],
        "shape": {"input": [1, 6, 8], "kernel": [1, 1, 1, 2], "output": [1, 6, 7]},
        "formula": [formula("H", 6, 1, 0, 1, 1, 6), formula("W", 8, 2, 0, 1, 1, 7)],
        "pooled": None, "pool_formula": None,
    }


def test_the_edge_examples_6x7_output_pooled_2x2_at_stride_1_by_hand(bare):
    _, _, info = call(bare, "GET", "/api/info")
    status, _, answer = call(bare, "POST", "/api/ops", {**info["edge_example"],
                                                        "pool": {"mode": "max", "size": 2, "stride": 1}})
    assert status == 200
    assert answer["pooled"] == [[[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]] * 5]  # each row's pairs: max(0, 1), max(1, 0), ...
    assert answer["pool_formula"] == [formula("H", 6, 2, 0, 1, 1, 5), formula("W", 7, 2, 0, 1, 1, 6)]


def test_padding_1_stride_2_by_hand(bare):
    # zero-padded 5x5 around 1..9; 2x2 windows of ones at rows/columns 0 and 2: 0+0+0+1, 0+0+2+3, 0+4+0+7, 5+6+8+9
    request = {"input": [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]], "kernel": [[[[1, 1], [1, 1]]]], "padding": 1, "stride": 2,
               "pool": {"mode": "max"}}
    status, _, answer = call(bare, "POST", "/api/ops", request)
    assert status == 200
    assert answer["output"] == [[[1.0, 5.0], [11.0, 28.0]]]
    assert answer["partials"] == [[[[1.0, 5.0], [11.0, 28.0]]]]  # one input channel: its share is all of it
    assert answer["shape"]["output"] == [1, 2, 2]
    assert answer["formula"] == [formula("H", 3, 2, 1, 2, 1, 2), formula("W", 3, 2, 1, 2, 1, 2)]
    assert answer["pooled"] == [[[28.0]]]  # size 2 and stride 2 by default
    assert answer["pool_formula"] == [formula("H", 2, 2, 0, 2, 1, 1), formula("W", 2, 2, 0, 2, 1, 1)]


def test_dilation_and_two_channels_by_hand_with_each_channels_share(bare):
    # x0[r, c] = 4r + c under [[1, 0], [0, -1]] dilated by 2: x0[i, j] - x0[i + 2, j + 2] = -10; x1 = ones under
    # [[0, 1], [0, 0]]: 1; the output is their sum
    x0 = [[4 * r + c for c in range(4)] for r in range(4)]
    request = {"input": [x0, [[1] * 4] * 4], "kernel": [[[[1, 0], [0, -1]], [[0, 1], [0, 0]]]], "dilation": 2}
    status, _, answer = call(bare, "POST", "/api/ops", request)
    assert status == 200
    assert answer["output"] == [[[-9.0, -9.0], [-9.0, -9.0]]]
    assert answer["partials"] == [[[[-10.0, -10.0], [-10.0, -10.0]], [[1.0, 1.0], [1.0, 1.0]]]]
    assert answer["shape"] == {"input": [2, 4, 4], "kernel": [1, 2, 2, 2], "output": [1, 2, 2]}
    assert answer["formula"] == [formula("H", 4, 2, 0, 1, 2, 2), formula("W", 4, 2, 0, 1, 2, 2)]
    assert answer["pooled"] is None


@pytest.mark.parametrize("pool, pooled, out", [
    ({"mode": "max", "size": 2}, [[5.0, 7.0], [13.0, 15.0]], 2),
    ({"mode": "avg"}, [[2.5, 4.5], [10.5, 12.5]], 2),
    ({"mode": "max", "size": 2, "stride": 1}, [[5.0, 6.0, 7.0], [9.0, 10.0, 11.0], [13.0, 14.0, 15.0]], 3),
    ({"mode": "avg", "size": 4, "stride": 4}, [[7.5]], 1),
    ({"size": 2}, None, None),
])
def test_pooling_a_4x4_grid_by_hand(bare, pool, pooled, out):
    request = {"input": [[[4 * r + c for c in range(4)] for r in range(4)]], "kernel": [[[[1]]]], "pool": pool}
    status, _, answer = call(bare, "POST", "/api/ops", request)
    assert status == 200 and answer["output"] == [[[4.0 * r + c for c in range(4)] for r in range(4)]]
    assert answer["pooled"] == (None if pooled is None else [pooled])
    if out is not None:
        size, stride = pool.get("size", 2), pool.get("stride", pool.get("size", 2))
        assert answer["pool_formula"] == [formula("H", 4, size, 0, stride, 1, out),
                                          formula("W", 4, size, 0, stride, 1, out)]
    else:
        assert answer["pool_formula"] is None


def test_the_largest_request_the_limits_allow_is_answered(bare):
    request = {"input": [[[1000] * 16] * 16] * 4, "kernel": [[[[-1000] * 7] * 7] * 4] * 4, "padding": 4, "stride": 4,
               "pool": {"mode": "avg", "size": 1, "stride": 4}}
    status, _, answer = call(bare, "POST", "/api/ops", request)
    assert status == 200
    # (16 + 8 - 7) // 4 + 1 = 5 a side; pooled: units 0 and 4, whose windows hold 3 and 4 input rows (the rest
    # padding), times 4 channels of -1000 * 1000
    assert answer["shape"]["output"] == [4, 5, 5] and answer["formula"][0] == formula("H", 16, 7, 4, 4, 1, 5)
    assert answer["pooled"] == [[[-36e6, -48e6], [-48e6, -64e6]]] * 4


OPS_REFUSALS = {
    "no input": ({"kernel": [[[[1]]]]}, "input must be a 3-D list with at most 4 x 16 x 16 entries"),
    "an empty input": ({"input": [], "kernel": [[[[1]]]]}, "input must be a 3-D list with at most 4 x 16 x 16 entries"),
    "17 columns": ({"input": [[[0] * 17]], "kernel": [[[[1]]]]},
                   "input must be a 3-D list with at most 4 x 16 x 16 entries"),
    "17 rows": ({"input": [[[0]] * 17], "kernel": [[[[1]]]]},
                "input must be a 3-D list with at most 4 x 16 x 16 entries"),
    "5 channels": ({"input": [[[0]]] * 5, "kernel": [[[[1]]]]},
                   "input must be a 3-D list with at most 4 x 16 x 16 entries"),
    "a kernel 8 wide": ({"input": [[[0] * 9] * 9], "kernel": [[[[1] * 8]]]},
                        "kernel must be a 4-D list with at most 4 x 4 x 7 x 7 entries"),
    "5 kernels": ({"input": [[[0]]], "kernel": [[[[1]]]] * 5},
                  "kernel must be a 4-D list with at most 4 x 4 x 7 x 7 entries"),
    "a string": ({"input": [[["a"]]], "kernel": [[[[1]]]]}, "input must hold finite numbers, got 'a'"),
    "a long string": ({"input": [[["b" * 30]]], "kernel": [[[[1]]]]},
                      f"input must hold finite numbers, got {'b' * 20!r}"),
    "a boolean": ({"input": [[[True]]], "kernel": [[[[1]]]]}, "input must hold finite numbers, got 'True'"),
    "a list too deep": ({"input": [[[[1]]]], "kernel": [[[[1]]]]}, "input must hold finite numbers, got '[1]'"),
    "over the magnitude": ({"input": [[[1000.5]]], "kernel": [[[[1]]]]},
                           "input's values must lie within +-1000, got 1000.5"),
    "under minus the magnitude": ({"input": [[[1]]], "kernel": [[[[-1001]]]]},
                                  "kernel's values must lie within +-1000, got -1001"),
    "ragged rows": ({"input": [[[0, 0], [0]]], "kernel": [[[[1]]]]},
                    "input must be rectangular (every row as long as the first)"),
    "ragged channels": ({"input": [[[0, 0]], [[0]]], "kernel": [[[[1]], [[1]]]]},
                        "input must be rectangular (every row as long as the first)"),
    "ragged kernels": ({"input": [[[0, 0]]], "kernel": [[[[1]]], [[[1, 1]]]]},
                       "kernel must be rectangular (every row as long as the first)"),
    "channels that do not match": ({"input": [[[0]]], "kernel": [[[[1]], [[1]]]]},
                                   "the kernel has 2 input channels but the input has 1"),
    "a kernel larger than the input": ({"input": [[[0, 0]]], "kernel": [[[[1, 1, 1]]]]},
                                       "kernel_size (1, 3) (extent 3 with dilation (1, 1)) is larger than the padded "
                                       "input 1x2"),
    "padding 5": ({"input": [[[0]]], "kernel": [[[[1]]]], "padding": 5}, "padding must be 0..4, got 5"),
    "padding -1": ({"input": [[[0]]], "kernel": [[[[1]]]], "padding": -1}, "padding must be 0..4, got -1"),
    "stride 0": ({"input": [[[0]]], "kernel": [[[[1]]]], "stride": 0}, "stride must be 1..4, got 0"),
    "stride 5": ({"input": [[[0]]], "kernel": [[[[1]]]], "stride": 5}, "stride must be 1..4, got 5"),
    "dilation 0": ({"input": [[[0]]], "kernel": [[[[1]]]], "dilation": 0}, "dilation must be 1..4, got 0"),
    "dilation 5": ({"input": [[[0]]], "kernel": [[[[1]]]], "dilation": 5}, "dilation must be 1..4, got 5"),
    "padding as a string": ({"input": [[[0]]], "kernel": [[[[1]]]], "padding": "1"},
                            "padding must be a whole number, got str"),
    "stride as a float": ({"input": [[[0]]], "kernel": [[[[1]]]], "stride": 1.0},
                          "stride must be a whole number, got float"),
    "dilation as a boolean": ({"input": [[[0]]], "kernel": [[[[1]]]], "dilation": True},
                              "dilation must be a whole number, got bool"),
    "an unknown field": ({"input": [[[0]]], "kernel": [[[[1]]]], "file": "/etc/passwd"},
                         "the request has unknown fields: file "
                         "(known: dilation, input, kernel, padding, pool, stride)"),
    "many long unknown fields": ({"input": [[[0]]], "kernel": [[[[1]]]], **{c * 40: 1 for c in "gfedcba"}},
                                 "the request has unknown fields: " + ", ".join(c * 30 for c in "abcde")
                                 + " (known: dilation, input, kernel, padding, pool, stride)"),
    "a list for a body": ([1, 2], "the request must be a JSON object"),
    "an unknown pool mode": ({"input": [[[0]]], "kernel": [[[[1]]]], "pool": {"mode": "median" * 5}},
                             f"pool mode must be one of none, max, avg, got {('median' * 5)[:20]!r}"),
    "pool size 5": ({"input": [[[0]]], "kernel": [[[[1]]]], "pool": {"mode": "max", "size": 5}},
                    "pool size must be 1..4, got 5"),
    "pool size 0": ({"input": [[[0]]], "kernel": [[[[1]]]], "pool": {"mode": "max", "size": 0}},
                    "pool size must be 1..4, got 0"),
    "pool stride 5": ({"input": [[[0]]], "kernel": [[[[1]]]], "pool": {"mode": "max", "stride": 5}},
                      "pool stride must be 1..4, got 5"),
    "pool stride 0": ({"input": [[[0]]], "kernel": [[[[1]]]], "pool": {"mode": "max", "size": 1, "stride": 0}},
                      "pool stride must be 1..4, got 0"),
    "an unknown pool field": ({"input": [[[0]]], "kernel": [[[[1]]]], "pool": {"mode": "max", "pad": 1}},
                              "pool has unknown fields: pad (known: mode, size, stride)"),
    "a pool that is not an object": ({"input": [[[0]]], "kernel": [[[[1]]]], "pool": "max"},
                                     "pool must be a JSON object"),
    "a pool larger than the output": ({"input": [[[0, 0], [0, 0]]], "kernel": [[[[1]]]],
                                       "pool": {"mode": "avg", "size": 3}},
                                      "pooling: kernel_size (3, 3) (extent 3 with dilation (1, 1)) is larger than the "
                                      "padded input 2x2"),
}


@pytest.mark.parametrize("case", list(OPS_REFUSALS))
def test_each_bad_operations_request_is_refused_with_its_exact_reason(bare, case):
    body, reason = OPS_REFUSALS[case]
    status, headers, answer = call(bare, "POST", "/api/ops", json.dumps(body).encode())
    assert (status, answer) == (400, {"error": reason})
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("body", [b"{not json", b"[" * 60_000, b"", b'{"input": [[[1]]], "kernel": [[[[1]]]]'])
def test_a_body_that_is_not_json_is_refused(bare, body):
    assert call(bare, "POST", "/api/ops", body)[::2] == (400, {"error": "the body must be JSON"})


def test_json_non_finite_numbers_are_refused(bare):
    for word, shown in (("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")):
        body = f'{{"input": [[[{word}]]], "kernel": [[[[1]]]]}}'.encode()
        assert call(bare, "POST", "/api/ops", body)[::2] == (
            400, {"error": f"input must hold finite numbers, got {shown!r}"})
    edge = b'{"input": [[[1000, -1000]]], "kernel": [[[[-1000]]]]}'  # the magnitude itself is allowed
    assert call(bare, "POST", "/api/ops", edge)[::2] == (200, call(bare, "POST", "/api/ops", edge)[2])
    assert call(bare, "POST", "/api/ops", edge)[2]["output"] == [[[-1e6, 1e6]]]


def test_the_operations_body_is_capped_at_64_kib_even_undeclared(bare):
    body = b'{"input": [[[1]]], "kernel": [[[[1]]]]}'
    exact = body + b" " * (64 * 1024 - len(body))
    assert call(bare, "POST", "/api/ops", exact)[0] == 200  # the limit itself is allowed
    assert call(bare, "POST", "/api/ops", exact + b" ")[::2] == (
        413, {"error": "the request body is larger than the limit of 65,536 bytes"})

    def chunks():  # no Content-Length: the body is counted as it arrives
        yield body
        for _ in range(70):
            yield b" " * 1024

    assert call(bare, "POST", "/api/ops", chunks())[::2] == (
        413, {"error": "the request body is larger than the limit of 65,536 bytes"})


@pytest.mark.parametrize("method, path", [("GET", "/api/info?x=1"), ("POST", "/api/ops?debug=1"),
                                          ("GET", "/api/kernels.png?file=a"), ("POST", "/api/analyze?test=1&path=x"),
                                          ("POST", "/api/explain?target=1&test=1&channels=2")])
def test_unknown_parameters_are_refused_by_name(server, method, path):
    unknown = path.rsplit("&" if "&" in path else "?", 1)[1].split("=")[0]
    assert call(server, method, path)[::2] == (400, {"error": f"unknown parameters: {unknown}"})


def test_many_long_unknown_parameters_are_named_shortened(bare):
    query = "&".join(f"{c * 40}=1" for c in "gfedcba")
    assert call(bare, "GET", f"/api/info?{query}")[::2] == (
        400, {"error": "unknown parameters: " + ", ".join(c * 30 for c in "abcde")})


@pytest.mark.parametrize("path", ["/api/analyze?test=0", "/api/explain?test=0&target=1", "/api/kernels.png"])
def test_without_a_run_the_run_views_say_how_to_start_one(bare, path):
    method = "GET" if path.endswith(".png") else "POST"
    assert call(bare, method, path)[::2] == (
        400, {"error": "no run: start the explorer with a run directory (convzoo explore RUN)"})


def test_the_page_and_its_files_with_their_types(bare):
    static = Path(__import__("convzoo.explore", fromlist=["x"]).__file__).parent / "static"
    for path, name, kind in (("/", "index.html", "text/html"), ("/static/explore.js", "explore.js", "text/javascript"),
                             ("/static/explore.css", "explore.css", "text/css")):
        status, headers, body = call(bare, "GET", path)
        assert status == 200 and headers["content-type"] == f"{kind}; charset=utf-8"
        assert body == (static / name).read_bytes()
    assert call(bare, "GET", "/static/index.html")[0] == 404  # only the script and the style under /static/
    assert call(bare, "POST", "/api/info")[0] == 405


# --- the door (security.Guard) --------------------------------------------------------------------------------

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURED = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
           "x-frame-options": "DENY", "cache-control": "no-store"}


def secured(headers: dict) -> dict:
    return {key: headers.get(key) for key in SECURED}


def test_every_answer_carries_the_security_headers(bare):
    for request in (dict(method="GET", path="/"), dict(method="GET", path="/api/info", token=None),
                    dict(method="GET", path=f"/?token={bare.token}", token=None),
                    dict(method="POST", path="/api/ops", body=b"x")):
        assert secured(call(bare, **request)[1]) == SECURED, request


def test_the_address_with_the_secret_answers_303_with_the_cookie(bare):
    status, headers, body = call(bare, "GET", f"/?token={bare.token}", token=None)
    assert (status, body) == (303, b"")
    assert headers["location"] == "/" and headers["content-length"] == "0"
    assert headers["set-cookie"] == f"convzoo_explore={bare.token}; Path=/; HttpOnly; SameSite=Strict"
    other = ExplorerServer()
    other.socket.close()
    assert len(bare.token) == len(other.token) == 43 and bare.token != other.token  # 256 random bits, new each start
    assert set(bare.token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


TOKEN_REFUSALS = {
    "no token": (dict(token=None), "missing or wrong token: open the address that 'convzoo explore' printed"),
    "a wrong header": (dict(token="x" * 43), "missing or wrong token: open the address that 'convzoo explore' printed"),
    "a wrong cookie": (dict(token=None, headers={"Cookie": "convzoo_explore=guess"}),
                       "missing or wrong token: open the address that 'convzoo explore' printed"),
    "the cookie under another name": (dict(token=None, headers={"Cookie": "explore={token}"}),
                                      "missing or wrong token: open the address that 'convzoo explore' printed"),
    "a wrong header beats a right cookie": (dict(token="y" * 43, headers={"Cookie": "convzoo_explore={token}"}),
                                            "missing or wrong token: open the address that 'convzoo explore' printed"),
    "the cookie in a malformed Cookie header": (dict(token=None,
                                                     headers={"Cookie": "convzoo_explore={token}; a<b=c"}),
                                                "missing or wrong token: open the address that \'convzoo explore\' "
                                                "printed"),
    "the secret in another path's address": (dict(token=None, path="/api/info?token={token}"),
                                             "missing or wrong token: open the address that 'convzoo explore' printed"),
    "a wrong secret in the address": (dict(token=None, path="/?token=guess"),
                                      "wrong token: open the address that 'convzoo explore' printed"),
    "a Host of another name": (dict(host="evil.example:80"), "Host 'evil.example:80' is not this server's address"),
    "a long Host": (dict(host="a" * 100), f"Host {'a' * 60!r} is not this server's address"),
    "another port": (dict(host="127.0.0.1:1"), "Host '127.0.0.1:1' is not this server's address"),
    "another site's Origin": (dict(headers={"Origin": "http://evil.example"}),
                              "requests from 'http://evil.example' are refused"),
    "this address over https": (dict(headers={"Origin": "https://127.0.0.1:{port}"}),
                                "requests from 'https://127.0.0.1:{port}' are refused"),
    "a long Origin": (dict(headers={"Origin": "http://" + "o" * 100}),
                      f"requests from {'http://' + 'o' * 53!r} are refused"),
}


@pytest.mark.parametrize("case", list(TOKEN_REFUSALS))
def test_each_request_without_the_secret_or_from_elsewhere_is_refused_with_403_and_its_reason(bare, case):
    request, reason = TOKEN_REFUSALS[case]
    fill = {"token": bare.token, "port": bare.port}
    request = {"path": "/api/info", **request}
    request["path"] = request["path"].format(**fill)
    request["headers"] = {k: v.format(**fill) for k, v in request.get("headers", {}).items()}
    status, headers, answer = call(bare, "GET", **request)
    assert (status, answer) == (403, {"error": reason.format(**fill)})
    assert headers["content-type"] == "application/json" and headers["content-length"] == str(
        len(json.dumps({"error": reason.format(**fill)})))
    assert secured(headers) == SECURED


@pytest.mark.parametrize("request_", [
    dict(token=None, headers={"Cookie": "convzoo_explore={token}"}),
    dict(token=None, headers={"Cookie": "other=1; convzoo_explore={token}"}),
    dict(headers={"Cookie": "convzoo_explore=guess"}),  # the header is enough
    dict(headers={"Cookie": "convzoo_explore={token}; a<b=c"}),  # a malformed Cookie header is the same as none
    dict(host="localhost:{port}"),
    dict(headers={"Origin": "http://127.0.0.1:{port}"}),
    dict(headers={"Origin": "http://localhost:{port}"}),
], ids=["cookie", "cookie among others", "header", "malformed cookie", "localhost", "own origin", "localhost origin"])
def test_the_secret_by_cookie_or_header_from_this_address_is_let_in(bare, request_):
    fill = {"token": bare.token, "port": bare.port}
    request = {**request_, "headers": {k: v.format(**fill) for k, v in request_.get("headers", {}).items()}}
    if "host" in request:
        request["host"] = request["host"].format(**fill)
    status, _, answer = call(bare, "GET", "/api/info", **request)
    assert status == 200 and answer["run"] is None


def asgi(app, headers: list[tuple[bytes, bytes]], path: str = "/api/info", query: bytes | None = b"",
         kind: str = "http") -> list[dict]:
    """One raw ASGI exchange with ``app``; returns the messages it sent (``query`` None: a scope without
    ``query_string``, which the ASGI specification allows)."""
    import asyncio

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": kind, "method": "GET", "path": path, "query_string": query, "headers": headers, "scheme": "http",
             "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2), "root_path": "", "raw_path": path.encode(),
             "http_version": "1.1"}
    if query is None:
        del scope["query_string"]
    asyncio.run(app(scope, receive, send))
    return sent


def inner_app(seen: list, headers: bool = True):
    async def app(scope, receive, send):
        seen.append(scope["type"])
        if scope["type"] == "http":
            start = {"type": "http.response.start", "status": 200}
            await send({**start, "headers": [(b"x-inner", b"1")]} if headers else start)
            await send({"type": "http.response.body", "body": b"inner"})
    return app


def test_the_door_reads_header_names_in_any_case_and_the_first_of_each(bare):
    from convzoo.explore.security import Guard

    seen: list = []
    guard = Guard(inner_app(seen), "secret", {"h:1"}, max_body=10)
    sent = asgi(guard, [(b"HOST", b"h:1"), (b"Host", b"evil"), (b"X-Explore-Token", b"secret"),
                        (b"x-explore-token", b"wrong")])
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"inner" and seen == ["http"]
    assert sent[0]["headers"] == [(b"x-inner", b"1"), *[(k.encode(), v.encode()) for k, v in SECURED.items()]]
    sent = asgi(guard, [(b"host", b"\xe9vil"), (b"x-explore-token", b"secret")])  # bytes read as Latin-1
    body = json.dumps({"error": "Host '\u00e9vil' is not this server's address"}).encode()
    assert sent == [{"type": "http.response.start", "status": 403, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *[(k.encode(), v.encode()) for k, v in SECURED.items()]]}, {"type": "http.response.body", "body": body}]
    sent = asgi(guard, [(b"host", b"h:1"), (b"x-explore-token", b"secr\xe9t")])
    assert sent[0]["status"] == 403
    assert asgi(guard, [(b"host", b"h:1"), (b"x-explore-token", b"secret")], path="/", query=None)[0]["status"] == 200
    bare_start = Guard(inner_app([], headers=False), "secret", {"h:1"}, max_body=10)
    sent = asgi(bare_start, [(b"host", b"h:1"), (b"x-explore-token", b"secret")])
    assert sent[0]["headers"] == [(k.encode(), v.encode()) for k, v in SECURED.items()]  # added to none
    assert asgi(guard, [(b"host", b"h:1")], path="/", query=b"token=secret") == [  # the address with the secret
        {"type": "http.response.start", "status": 303, "headers": [
            (b"location", b"/"), (b"set-cookie", b"convzoo_explore=secret; Path=/; HttpOnly; SameSite=Strict"),
            (b"content-length", b"0"), *[(k.encode(), v.encode()) for k, v in SECURED.items()]]},
        {"type": "http.response.body", "body": b""}]
    assert asgi(guard, [(b"host", b"h:1"), (b"x-explore-token", b"secret")], kind="lifespan") == []
    assert seen == ["http", "http", "lifespan"]  # not an HTTP request: passed on untouched


@pytest.mark.parametrize("length, status", [("10", 200), ("11", 413), ("abc", 413), ("-1", 413), ("", 413)])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(length, status):
    from convzoo.explore.security import Guard

    guard = Guard(inner_app([]), "secret", {"h:1"}, max_body=10)
    sent = asgi(guard, [(b"host", b"h:1"), (b"x-explore-token", b"secret"), (b"content-length", length.encode())])
    assert sent[0]["status"] == status
    if status == 413:
        assert json.loads(sent[1]["body"]) == {"error": "the request body is larger than the limit of 10 bytes"}
    assert asgi(guard, [(b"host", b"h:1"), (b"x-explore-token", b"secret")])[0]["status"] == 200  # none declared


def test_the_upload_limit_declared_is_refused_with_its_size(server):
    status, _, answer = call(server, "POST", "/api/analyze", b"x" * 10, headers={"Content-Length": str(4 * 2**20 + 1)})
    assert (status, answer) == (413, {"error": "the request body is larger than the limit of 4,194,304 bytes"})


# --- the server: its address, its refusals to start, its errors -----------------------------------------------

def test_the_server_binds_the_loopback_address_asked_and_knows_its_names():
    import socket

    explorer = ExplorerServer()
    try:
        assert explorer.socket.family == socket.AF_INET and explorer.socket.getsockname()[0] == "127.0.0.1"
        port = explorer.port
        assert port == explorer.socket.getsockname()[1] and port > 0
        assert explorer.hosts == {f"127.0.0.1:{port}", f"localhost:{port}"}
        assert explorer.url == f"http://127.0.0.1:{port}/" and not explorer.remote
        assert explorer.address == f"http://127.0.0.1:{port}/?token={explorer.token}"
        config = explorer._server.config  # no access log (the first request carries the secret), bounded connections
        assert (config.log_level, config.access_log, config.lifespan, config.limit_concurrency,
                config.timeout_keep_alive) == ("warning", False, "off", 64, 5)
        assert config.app is explorer.app  # uvicorn serves the guarded app
    finally:
        explorer.socket.close()


def test_an_ipv6_loopback_address_is_bracketed():
    import socket

    explorer = ExplorerServer(host="::1")
    try:
        port = explorer.port
        assert explorer.socket.family == socket.AF_INET6 and explorer.socket.getsockname()[0] == "::1"
        assert explorer.hosts == {f"[::1]:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}
        assert explorer.url == f"http://[::1]:{port}/" and not explorer.remote
        assert call(explorer, "GET", "/api/info", host=f"[::1]:{port}")[0] == 200
    finally:
        explorer.socket.close()


def test_another_address_with_allow_remote_answers_only_to_that_name(monkeypatch):
    import socket

    from convzoo.explore import server as module

    asked = []

    def listen(host, port, allow_remote):  # the documentation address cannot be bound here: a loopback socket for it
        asked.append((host, port, allow_remote))
        return socket.create_server(("127.0.0.1", 0))

    monkeypatch.setattr(module, "_listen", listen)
    explorer = ExplorerServer(host="192.0.2.1", port=8765, allow_remote=True)
    try:
        port = explorer.port
        assert asked == [("192.0.2.1", 8765, True)]
        assert explorer.hosts == {f"192.0.2.1:{port}"} and explorer.remote
        assert explorer.url == f"http://192.0.2.1:{port}/"
        assert call(explorer, "GET", "/api/info", host=f"192.0.2.1:{port}")[0] == 200
        assert call(explorer, "GET", "/api/info", host=f"localhost:{port}")[0] == 403
    finally:
        explorer.socket.close()


@pytest.mark.parametrize("listen, reason", [
    (dict(host="localhost"), "--host must be an IP address, got 'localhost'"),
    (dict(host="0.0.0.0", allow_remote=True),
     "--host 0.0.0.0 listens on every address; name the one address to listen on"),
    (dict(host="::"), "--host :: listens on every address; name the one address to listen on"),
    (dict(host="192.0.2.1"), "--host 192.0.2.1 lets other machines reach the explorer; add --allow-remote to mean it"),
    (dict(port=65536), "--port must be 0..65535, got 65536"),
    (dict(port=-1), "--port must be 0..65535, got -1"),
    (dict(host="192.0.2.1", allow_remote=True),
     "cannot listen on 192.0.2.1:0: Cannot assign requested address (while attempting to bind on "
                                               "address ('192.0.2.1', 0))"),
])
def test_an_address_the_explorer_may_not_or_cannot_listen_on_is_refused_in_one_line(listen, reason):
    with pytest.raises(ExploreError) as error:
        ExplorerServer(**listen)
    assert str(error.value) == reason


def test_a_busy_port_is_refused_with_its_address():
    import socket

    busy = socket.create_server(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        with pytest.raises(ExploreError) as error:
            ExplorerServer(port=port)
        assert str(error.value) == (f"cannot listen on 127.0.0.1:{port}: Address already in use (while attempting to "
                                    f"bind on address ('127.0.0.1', {port}))")
    finally:
        busy.close()
    try:  # the top of the range is a port (bound, or busy: never out of range)
        ExplorerServer(port=65535).socket.close()
    except ExploreError as exc:
        assert str(exc).startswith("cannot listen on 127.0.0.1:65535: ")


def test_open_server_opens_the_run_directory_or_none(lenet_dir, tmp_path):
    from convzoo.errors import UserError
    from convzoo.explore import open_server

    explorer = open_server(str(lenet_dir), port=0)  # device "auto": this machine's CPU
    try:
        status, _, info = call(explorer, "GET", "/api/info")
        assert status == 200 and info["run"]["model"] == "lenet" and info["run"]["test_images"] == 200
    finally:
        explorer.socket.close()
    explorer = open_server(str(lenet_dir), device="cpu", data_dir=str(tmp_path))
    try:  # the data directory asked for, not the run's: no test images there
        status, _, answer = call(explorer, "POST", "/api/analyze?test=0")
        assert status == 400 and str(tmp_path) in answer["error"] and "\n" not in answer["error"]
    finally:
        explorer.socket.close()
    explorer = open_server(host="::1")  # the address asked for reaches the server
    try:
        assert explorer.url.startswith("http://[::1]:") and call(explorer, "GET", "/api/info")[2]["run"] is None
    finally:
        explorer.socket.close()
    with pytest.raises(UserError, match="is not a convzoo run directory"):
        open_server(str(tmp_path))


def test_a_failing_view_answers_one_line_and_the_app_goes_on(server, monkeypatch, capsys):
    from convzoo.errors import UserError
    from convzoo.explore.network import RunExplorer

    def fail(error):
        def analyze(self, *args, **kwargs):
            raise error
        return analyze

    for error, status, reason in ((UserError("first line\nsecond line"), 400, "first line"),
                                  (UserError(""), 400, "UserError"),
                                  (RuntimeError("secret detail"), 500,
                                   "internal error (RuntimeError); see the server's terminal")):
        monkeypatch.setattr(RunExplorer, "analyze", fail(error))
        assert call(server, "POST", "/api/analyze?test=0")[::2] == (status, {"error": reason})
    assert "Traceback" in capsys.readouterr().err  # the bug's traceback goes to the terminal
    monkeypatch.undo()
    assert call(server, "POST", "/api/analyze?test=0")[0] == 200


# --- a run seen from the inside (network.py), through the routes -----------------------------------------------

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def from_base64(data: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(data)), dtype=torch.uint8).clone()


def as_bytes(values: torch.Tensor) -> torch.Tensor:
    """``values`` on 0..255 between their minimum and maximum, as the page gets them (worked out here by formula)."""
    low, high = values.min(), values.max()
    return ((values - low) / (high - low) * 255).round()


def test_info_of_a_run_lists_its_classes_layers_shapes_and_fields(server):
    status, _, info = call(server, "GET", "/api/info")
    assert status == 200
    run = info["run"]
    assert (run["model"], run["input_size"], run["classes"], run["test_images"]) == ("lenet", 28, FASHION, 200)
    assert run["layers"] == [  # conv 5x5 pad 2 -> pool 2/2 -> conv 5x5 -> pool 2/2 (see the receptive fields below)
        {"name": "0", "type": "Conv2d", "shape": [6, 28, 28], "field": {"start": -2, "size": 5, "jump": 1}},
        {"name": "2", "type": "AvgPool2d", "shape": [6, 14, 14], "field": {"start": -2, "size": 6, "jump": 2}},
        {"name": "3", "type": "Conv2d", "shape": [16, 10, 10], "field": {"start": -2, "size": 14, "jump": 2}},
        {"name": "5", "type": "AvgPool2d", "shape": [16, 5, 5], "field": {"start": -2, "size": 16, "jump": 4}},
    ]
    colours = run["colormap"]  # matplotlib's viridis, 256 steps
    assert len(colours) == 256 and colours[0] == [68, 1, 84] and colours[128] == [33, 145, 140]
    assert colours[255] == [253, 231, 37]
    assert info["limits"]["channels_shown"] == 16


def test_a_test_image_shows_its_pixels_truth_classes_and_feature_maps_by_hand(server, lenet_dir):
    status, _, answer = call(server, "POST", "/api/analyze?test=7")  # 8 channels by default
    assert status == 200
    run = api.load(lenet_dir, "cpu")
    images, labels = load_split("test", run.config.data_dir)
    assert answer["truth"] == {"label": int(labels[7]), "class": FASHION[int(labels[7])]}
    assert answer["input"]["size"] == 28 and torch.equal(from_base64(answer["input"]["data"]), images[7].flatten())
    expected = run.predict(images[7:8], top_k=5)[0]
    assert [(t["label"], t["class"]) for t in answer["top"]] == [(i, FASHION[i]) for i, _ in expected.top_labels]
    assert len(answer["top"]) == 5
    x = to_input(images[7:8], 28)
    with torch.no_grad():
        maps = {"0": run.model[0](x)[0], "2": run.model[:3](x)[0], "3": run.model[:4](x)[0], "5": run.model[:6](x)[0]}
    for layer, (name, out) in zip(answer["layers"], maps.items()):
        shown = out[:8]
        assert layer["name"] == name and layer["shape"] == list(out.shape) and layer["shown"] == list(shown.shape)
        assert layer["low"] == pytest.approx(float(shown.min()), abs=1e-5)
        assert layer["high"] == pytest.approx(float(shown.max()), abs=1e-5)
        got = from_base64(layer["data"]).float()
        assert got.numel() == shown.numel() and (got - as_bytes(shown).flatten()).abs().max() <= 1


@pytest.mark.parametrize("query, shown", [("channels=1", 1), ("channels=16", 16), ("channels=000016", 16)])
def test_the_channels_asked_are_shown(server, query, shown):
    status, _, answer = call(server, "POST", f"/api/analyze?test=0&{query}")
    assert status == 200 and [layer["shown"][0] for layer in answer["layers"]] == [min(6, shown), min(6, shown),
                                                                                   shown, shown]


RUN_REFUSALS = {
    "channels 0": ("/api/analyze?test=0&channels=0", "channels must be 1..16, got 0"),
    "channels 17": ("/api/analyze?test=0&channels=17", "channels must be 1..16, got 17"),
    "channels in words": ("/api/analyze?test=0&channels=eight", "channels must be a whole number, got 'eight'"),
    "channels negative": ("/api/analyze?test=0&channels=-1", "channels must be a whole number, got '-1'"),
    "channels of 7 digits": ("/api/analyze?test=0&channels=0000001", "channels must be a whole number, got '0000001'"),
    "a long test index": ("/api/analyze?test=" + "9" * 30, f"test must be a whole number, got {'9' * 20!r}"),
    "the test index after the last": ("/api/analyze?test=200", "test image index must be 0..199, got 200"),
    "the largest test index": ("/api/analyze?test=999999", "test image index must be 0..199, got 999999"),
    "an empty test index": ("/api/analyze?test=", "test must be a whole number, got ''"),
    "no image": ("/api/analyze", "no image in the request"),
    "no class": ("/api/explain?test=0", "target (the class to explain) is missing"),
    "class 10": ("/api/explain?test=0&target=10", "target must be 0..9, got 10"),
    "a class in words": ("/api/explain?test=0&target=coat", "target must be a whole number, got 'coat'"),
    "an unknown map": ("/api/explain?test=0&target=1&map=" + "x" * 30,
                       f"map must be one of gradcam, gradient, got {'x' * 20!r}"),
    "the explained test index after the last": ("/api/explain?test=200&target=1",
                                                "test image index must be 0..199, got 200"),
}


@pytest.mark.parametrize("case", list(RUN_REFUSALS))
def test_each_bad_run_request_is_refused_with_its_exact_reason(server, case):
    path, reason = RUN_REFUSALS[case]
    assert call(server, "POST", path)[::2] == (400, {"error": reason})


def test_an_image_and_a_test_index_together_are_refused(server):
    body = png(Image.new("L", (28, 28), 0))
    for path in ("/api/analyze?test=0", "/api/explain?test=0&target=1"):
        assert call(server, "POST", path, body)[::2] == (400, {"error": "send either ?test=N or an image, not both"})


def test_the_last_test_image_and_an_upload_have_their_truth_or_none(server, lenet_dir):
    status, _, answer = call(server, "POST", "/api/analyze?test=199")
    labels = load_split("test", str(SLICE))[1]
    assert status == 200 and answer["truth"]["label"] == int(labels[199])
    status, _, answer = call(server, "POST", "/api/analyze", png(Image.new("L", (28, 28), 0)))
    assert status == 200 and answer["truth"] is None
    assert torch.equal(from_base64(answer["input"]["data"]), torch.zeros(28 * 28, dtype=torch.uint8))


def test_grad_cam_by_hand_on_lenets_last_convolution(server, lenet_dir):
    """Grad-CAM: the last convolution's maps weighted by the mean gradient of the class's logit over each map,
    summed, positive part; placed on the input at the centres of the units' receptive fields."""
    from convzoo.explore.network import _on_input
    from convzoo.explore.receptive import Field

    status, _, answer = call(server, "POST", "/api/explain?test=3&target=2")
    assert status == 200
    assert {k: answer[k] for k in ("method", "target", "class", "size")} == {
        "method": "gradcam", "target": 2, "class": "Pullover", "size": 28}
    run = api.load(lenet_dir, "cpu")
    x = to_input(load_split("test", str(SLICE))[0][3:4], 28)
    maps = run.model[:4](x).detach().requires_grad_()
    run.model[4:](maps)[0, 2].backward()
    cam = (maps.grad[0].mean(dim=(1, 2))[:, None, None] * maps[0]).sum(dim=0).clamp(min=0).detach()
    expected = as_bytes(_on_input(cam, Field(-2, 14, 2), 28))
    assert (from_base64(answer["data"]).float().view(28, 28) - expected).abs().max() <= 1


def test_the_kernels_figure_is_drawn_once_and_is_the_runs(server, lenet_dir):
    from convzoo.figures import figure_png, layer_kernels_figure

    first = call(server, "GET", "/api/kernels.png")[2]
    assert call(server, "GET", "/api/kernels.png")[2] == first
    assert first == figure_png(layer_kernels_figure(api.load(lenet_dir, "cpu").model))


def test_a_runs_own_class_names_are_shown_as_given(tmp_path, one_thread):
    """A run's classes come from its config.json (a folder's names): shown as they are, JSON-escaped."""
    names = ['<b>T&shirt</b>', 'Trouser "x"', "Pull'over", "Dre\\ss", "Co\u00e4t", "San</script>dal", "Shirt\n2",
             "Snea ker", "Bag%20", "Ankle\u2028boot"]
    explorer = ExplorerServer(api.load(lenet_run_dir(tmp_path, names), "cpu"))
    try:
        status, headers, info = call(explorer, "GET", "/api/info")
        assert status == 200 and info["run"]["classes"] == names
        status, _, answer = call(explorer, "POST", "/api/analyze?test=7")
        assert status == 200 and all(t["class"] == names[t["label"]] for t in answer["top"])
        assert answer["truth"]["class"] == names[answer["truth"]["label"]]
        status, _, explained = call(explorer, "POST", "/api/explain?test=7&target=5")
        assert status == 200 and explained["class"] == "San</script>dal"
        assert headers["content-type"] == "application/json" and headers["x-content-type-options"] == "nosniff"
    finally:
        explorer.socket.close()


def test_the_explorers_own_checks_behind_the_routes(lenet_dir, one_thread):
    from convzoo.explore.network import RunExplorer
    from convzoo.explore.validate import RequestError

    explorer = RunExplorer(api.load(lenet_dir, "cpu"))
    pixels, label = explorer.test_image(0)
    assert pixels.shape == (1, 28, 28) and label == int(load_split("test", str(SLICE))[1][0])
    for channels in (0, 17):
        with pytest.raises(RequestError) as error:
            explorer.analyze(pixels, channels=channels)
        assert str(error.value) == f"channels must be 1..16, got {channels}"
    assert [layer["shown"][0] for layer in explorer.analyze(pixels)["layers"]] == [6, 6, 8, 8]
    for target in (-1, 10):
        with pytest.raises(RequestError) as error:
            explorer.explain(pixels, target)
        assert str(error.value) == f"target must be a class label 0..9, got {target}"
    assert explorer.explain(pixels, 9)["method"] == "gradcam"
    assert explorer.kernels_png()[:8] == b"\x89PNG\r\n\x1a\n" and explorer.kernels_png() == explorer.kernels_png()
    assert [layer["shape"] for layer in explorer.info()["layers"]] == [[6, 28, 28], [6, 14, 14], [16, 10, 10],
                                                                      [16, 5, 5]]
    with pytest.raises(RequestError) as error:
        explorer.test_image(-1)
    assert str(error.value) == "test image index must be 0..199, got -1"


def test_deep_networks_show_24_layers_evenly_spaced():
    from torch import nn

    from convzoo.explore.network import _shown_layers

    layers = [nn.Conv2d(1, 1, 1) for _ in range(30)]
    assert _shown_layers(nn.Sequential(*layers)) == [str(i) for i in (0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16,
                                                                       18, 19, 20, 21, 23, 24, 25, 26, 28, 29)]
    mixed = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.BatchNorm2d(1),
                          nn.AdaptiveAvgPool2d(1), nn.Sequential(nn.Conv2d(1, 1, 1)), nn.Flatten(), nn.Linear(1, 1))
    assert _shown_layers(mixed) == ["0", "2", "3", "6.0"]


def test_feature_maps_larger_than_32_are_averaged_down_on_one_scale():
    from convzoo.explore.network import _feature_maps, _to_bytes

    base = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = base.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # (3, 64, 64): 2x2 blocks of one value
    maps = _feature_maps("conv", out, 2)
    assert (maps["name"], maps["shape"], maps["shown"]) == ("conv", [3, 64, 64], [2, 32, 32])
    shown = base[:2]
    assert maps["low"] == pytest.approx(float(shown.min())) and maps["high"] == pytest.approx(float(shown.max()))
    assert (from_base64(maps["data"]).float() - as_bytes(shown).flatten()).abs().max() <= 1
    tall = _feature_maps("tall", torch.rand(1, 40, 20), 4)
    assert (tall["shape"], tall["shown"]) == ([1, 40, 20], [1, 32, 20])
    small = _feature_maps("small", out[:, :32, :32], 3)
    assert small["shown"] == [3, 32, 32]
    assert _to_bytes(torch.full((2, 2), 3.0))[0].tolist() == [[0, 0], [0, 0]]  # one value: no scale, zeros
    scaled, low, high = _to_bytes(torch.tensor([-1.0, 0.0, 3.0]))
    assert (scaled.tolist(), low, high) == ([0.0, 64.0, 255.0], -1.0, 3.0)  # 63.75 rounds to 64


def test_a_one_unit_map_covers_the_input_evenly():
    from convzoo.explore.network import _on_input
    from convzoo.explore.receptive import Field

    assert torch.equal(_on_input(torch.tensor([[2.5]]), Field(-2, 32, 4), 28), torch.full((28, 28), 2.5))
    row = _on_input(torch.tensor([[0.0, 1.0]]), Field(0, 1, 10), 28)  # units at columns 0 and 10; the edge beyond
    assert row[0, :11].tolist() == pytest.approx([i / 10 for i in range(11)]) and row[5, 20].item() == 1.0


# --- uploads ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, error, reason", [
    (b"\0" * (4 * 2**20 + 1), UploadTooLarge, "the image is 4,194,305 bytes; the limit is 4,194,304"),
    (b"", "ImageError", "no image in the request"),
    (b"GIF89a", "ImageError", "not an image the explorer reads (PNG, JPEG, BMP, GIF, TIFF, WEBP)"),
    (b"P5\n2 2\n255\n" + bytes(4), "ImageError",  # a PPM: Pillow reads it, convzoo does not
     "not an image the explorer reads (PNG, JPEG, BMP, GIF, TIFF, WEBP)"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 3, "ImageError", "a corrupt image (OSError)"),
    (_bomb_png(20_000), UploadTooLarge, "the image is too large (decompression bomb guard)"),
    (_bomb_png(10_000), UploadTooLarge, "the image is 10000x10000 pixels; the limit is 16,000,000"),
    (_bomb_png(4001), UploadTooLarge, "the image is 4001x4001 pixels; the limit is 16,000,000"),
    (_bomb_png(4000), "ImageError",
     "corrupt or truncated image (OSError: image file is truncated (0 bytes not processed))"),
])
def test_each_bad_upload_is_refused_with_its_reason_and_no_path(data, error, reason):
    from convzoo.images import ImageError

    with pytest.raises(ImageError) as caught:
        upload_pixels(data)
    assert str(caught.value) == reason
    assert (type(caught.value) is UploadTooLarge) == (error is UploadTooLarge)


def test_an_upload_of_exactly_the_limit_is_read_not_refused_for_its_size():
    image = png(Image.new("L", (3, 5), 0))
    padded = image + b"\0" * (MAX_UPLOAD_BYTES - len(image))  # a PNG followed by padding: still a PNG
    assert torch.equal(upload_pixels(padded), upload_pixels(image))


def test_an_upload_is_decoded_as_convzoo_predict_decodes_its_file(tmp_path):
    from convzoo.images import load_image

    image = Image.new("L", (56, 28), 255)
    image.paste(0, (10, 5, 40, 20))
    image.save(tmp_path / "a.png")
    assert torch.equal(upload_pixels((tmp_path / "a.png").read_bytes()), load_image(tmp_path / "a.png")[None])


# --- receptive fields by hand -------------------------------------------------------------------------------------

def test_same_valid_dilated_and_pooling_geometry_by_hand():
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding="same", dilation=2), nn.MaxPool2d(3),
                          nn.Conv2d(1, 1, 3, padding="valid", stride=2), nn.ReLU(),
                          nn.MaxPool2d(3, stride=1, padding=1, dilation=2), nn.AvgPool2d(2, stride=1, padding=1))
    fields = {name: (f.start, f.size, f.jump) for name, f in receptive_fields(model).items()}
    # extent 5, padding 2 -> (-2, 5, 1); pool 3/3 -> (-2, 7, 3); 3x3 stride 2 -> (-2, 13, 6); relu: unchanged;
    # pool 3 dilated 2 (extent 5) padding 1 -> (-8, 37, 6); avg 2 padding 1 -> (-14, 43, 6)
    assert fields == {"0": (-2, 5, 1), "1": (-2, 7, 3), "2": (-2, 13, 6), "3": (-2, 13, 6), "4": (-8, 37, 6),
                      "5": (-14, 43, 6)}


def test_branching_blocks_see_the_union_of_their_paths():
    from torch import nn

    class Residual(nn.Module):  # the zoo's residual unit by its class name
        def __init__(self, shortcut: bool) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 1, 3, padding=1, stride=2), nn.BatchNorm2d(1)
            self.conv2, self.bn2 = nn.Conv2d(1, 1, 3, padding=1), nn.BatchNorm2d(1)
            self.conv3 = nn.Conv2d(1, 1, 1, stride=2) if shortcut else None

    class Inception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p1_1 = nn.Conv2d(1, 1, 1)
            self.p2_1, self.p2_2 = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 3, padding=1)
            self.p3_1, self.p3_2 = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 5, padding=2)
            self.p4_1, self.p4_2 = nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(1, 1, 1)

    fields = {n: (f.start, f.size, f.jump) for n, f in receptive_fields(nn.Sequential(Residual(True))).items()}
    # conv1 (-1, 3, 2); conv2 (-3, 7, 2); shortcut (0, 1, 2); identity (0, 1, 1): the union (-3, 7, 2)
    assert fields == {"0.conv1": (-1, 3, 2), "0.bn1": (-1, 3, 2), "0.conv2": (-3, 7, 2), "0.bn2": (-3, 7, 2),
                      "0.conv3": (0, 1, 2), "0": (-3, 7, 2)}
    fields = {n: (f.start, f.size, f.jump) for n, f in receptive_fields(nn.Sequential(Residual(False))).items()}
    assert fields["0"] == (-3, 7, 2) and "0.conv3" not in fields
    model = nn.Sequential(nn.Conv2d(1, 1, 2, stride=2), Inception())
    fields = {n: (f.start, f.size, f.jump) for n, f in receptive_fields(model).items()}
    # after (0, 2, 2): 1x1 (0, 2, 2); 3x3 (-2, 6, 2); 5x5 (-4, 10, 2); pool 3 then 1x1 (-2, 6, 2): union (-4, 10, 2)
    assert fields == {"0": (0, 2, 2), "1.p1_1": (0, 2, 2), "1.p2_1": (0, 2, 2), "1.p2_2": (-2, 6, 2),
                      "1.p3_1": (0, 2, 2), "1.p3_2": (-4, 10, 2), "1.p4_1": (-2, 6, 2), "1.p4_2": (-2, 6, 2),
                      "1": (-4, 10, 2)}
    wide = nn.Sequential(Residual(True), nn.Conv2d(1, 1, 3, padding=1))  # after the block: jump 2 (its widest)
    assert receptive_fields(wide)["1"].to_json() == {"start": -5, "size": 11, "jump": 2}
    assert receptive_fields(wide)["1"].rows(2, 3) == (-1, 11)


def test_the_server_serves_its_own_socket_in_a_thread_until_stopped():
    """``start()``: uvicorn on the bound socket in a daemon thread, returning once it serves; ``stop()`` ends it.
    (Only the status line is read: the routes are pinned in-process above.)"""
    import socket

    explorer = ExplorerServer().start()
    try:
        assert explorer._server.started and explorer._thread.is_alive()
        assert explorer._thread.name == "convzoo-explore" and explorer._thread.daemon
        with socket.create_connection(("127.0.0.1", explorer.port), timeout=30) as conn:
            conn.sendall(f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{explorer.port}\r\n\r\n".encode())
            assert conn.recv(9) == b"HTTP/1.1 "
    finally:
        explorer.stop()
    assert not explorer._thread.is_alive() and explorer.socket.fileno() == -1
    never_started = ExplorerServer()
    never_started.stop()  # closes its socket: no thread to end
    assert never_started.socket.fileno() == -1


def test_non_square_layers_are_read_by_their_rows():
    """The zoo's layers are square; a field is the rows' (kernel, stride, padding and dilation along the height)."""
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 1, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
                          nn.MaxPool2d((2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
                          nn.Conv2d(1, 1, (4, 5), padding="same", dilation=(1, 2)))
    fields = {name: (f.start, f.size, f.jump) for name, f in receptive_fields(model).items()}
    # rows: 3 dilated 2 (extent 5), padding 1, stride 2 -> (-1, 5, 2); pool 2, padding 1, stride 2 -> (-3, 7, 4);
    # 'same' with 4 rows: padding (4 - 1) // 2 = 1, extent 4 -> (-7, 19, 4)
    assert fields == {"0": (-1, 5, 2), "1": (-3, 7, 4), "2": (-7, 19, 4)}
    assert receptive_fields(model)["2"].to_json() == {"start": -7, "size": 19, "jump": 4}
