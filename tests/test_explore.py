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
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient  # noqa: E402

from convzoo import api, ops  # noqa: E402
from convzoo.data import load_split, to_input  # noqa: E402
from convzoo.explore import ExploreError, ExplorerServer  # noqa: E402
from convzoo.explore.receptive import receptive_fields  # noqa: E402
from convzoo.explore.uploads import MAX_UPLOAD_BYTES, UploadTooLarge, upload_pixels  # noqa: E402
from convzoo.models import create_model, list_models  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_run, one_thread):
    """The explorer of ``tiny_run``, bound (its address known) but answered in-process."""
    explorer = ExplorerServer(api.load(tiny_run, "cpu"))
    yield explorer
    explorer.socket.close()


@pytest.fixture(scope="module")
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

def test_a_test_image_gets_the_runs_own_prediction(server, tiny_run):
    status, _, answer = call(server, "POST", "/api/analyze?test=7&channels=4")
    assert status == 200
    run = api.load(tiny_run, "cpu")
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


def test_the_gradient_saliency_is_the_absolute_input_gradient_of_the_class_asked(server, tiny_run):
    status, _, answer = call(server, "POST", "/api/explain?test=3&map=gradient&target=4")
    assert status == 200 and answer["method"] == "gradient" and answer["class"] == "Coat"
    run = api.load(tiny_run, "cpu")
    x = to_input(load_split("test", run.config.data_dir)[0][3:4], run.config.input_size).requires_grad_()
    run.model(x)[0, 4].backward()
    grad = x.grad[0, 0].abs()
    shown = torch.frombuffer(bytearray(base64.b64decode(answer["data"])), dtype=torch.uint8)
    expected = (grad - grad.min()) / (grad.max() - grad.min()) * 255
    assert (shown.float().view(28, 28) - expected).abs().max() <= 1.0


def test_an_uploaded_image_gets_the_prediction_of_the_same_file(server, tiny_run, tmp_path):
    image = Image.new("L", (120, 90), 255)
    image.paste(0, (30, 20, 90, 70))  # a dark box on white: inverted by both doors alike
    path = tmp_path / "box.png"
    image.save(path)
    status, _, answer = call(server, "POST", "/api/analyze", path.read_bytes(), headers={"Content-Type": "image/png"})
    assert status == 200
    expected = api.load(tiny_run, "cpu").predict(str(path), top_k=5)[0]
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
