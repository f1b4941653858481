"""The explorer's web application (Starlette) and its server (uvicorn), bound to one address.

    GET  /                 the page (static/index.html; its script and style under /static/)
    GET  /api/info         the limits, and the run's model, classes, layers and receptive fields
    POST /api/ops          the operations on a JSON grid and kernel (``explore.ops``)
    POST /api/analyze      a run's view of one image: ``?test=N`` (a test image by index) or the
                           image's bytes as the body (a drawing, a dropped file); ``&channels=N``:
                           the prediction and every shown layer's feature maps
    POST /api/explain      the same image's attribution map for one class: ``&target=LABEL``,
                           ``&map=gradcam|gradient``
    GET  /api/kernels.png  the run's first convolution kernels

No request names a file. Every refusal is a 4xx with ``{"error": "one line"}``; an unexpected
error is a 500 with one line too (the traceback goes to the server's terminal), and the server
keeps serving. ``security.Guard`` checks every request first.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
import traceback
from collections.abc import Callable, MutableSet
from importlib import resources
from typing import Any

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import api
from ..errors import UserError
from . import ops
from .network import DEFAULT_CHANNELS, MAX_CHANNELS, RunExplorer
from .security import Guard, new_token
from .uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, UploadTooLarge, upload_pixels
from .validate import RequestError, parse_int

MAX_JSON_BYTES = 64 * 1024
MAX_CONNECTIONS = 64
LOOPBACK = "127.0.0.1"
STATIC = {"explore.js": "text/javascript", "explore.css": "text/css"}


class ExploreError(UserError):
    """The explorer cannot start as asked (an address it may not listen on, a busy port)."""


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it passes ``limit`` bytes, declared or not."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(f"the request body is larger than the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image(request: Request, net: RunExplorer) -> tuple[torch.Tensor, int | None]:
    """The image a request names: ``?test=N`` or its body's bytes; with the test image's label."""
    raw = await _body(request, MAX_UPLOAD_BYTES)
    if "test" in request.query_params:
        if raw:
            raise RequestError("send either ?test=N or an image, not both")
        index = parse_int(request.query_params["test"], "test", 0, 0, 10**6)
        return await run_in_threadpool(net.test_image, index)
    return await run_in_threadpool(upload_pixels, raw), None


def _answer(handler: Callable) -> Callable:
    """``handler`` with every error turned into a one-line JSON refusal."""
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except UploadTooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        except UserError as exc:  # RequestError, ImageError, DataError: the request's fault
            return JSONResponse({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__},
                                status_code=400)
        except Exception as exc:  # a bug: the client gets one line, the terminal the traceback
            traceback.print_exc(file=sys.stderr)
            return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's terminal"},
                                status_code=500)
    return endpoint


def create_app(run: api.Run | None = None, *, token: str, hosts: MutableSet[str],
               data_dir: str | None = None) -> Guard:
    """The explorer as an ASGI application: the operations, and ``run`` when given, behind ``security.Guard``."""
    explorer = RunExplorer(run, data_dir) if run is not None else None
    limits = {**ops.LIMITS, "channels_shown": MAX_CHANNELS, "upload_bytes": MAX_UPLOAD_BYTES,
              "upload_pixels": MAX_UPLOAD_PIXELS}

    def need_run() -> RunExplorer:
        if explorer is None:
            raise RequestError("no run: start the explorer with a run directory (convzoo explore RUN)")
        return explorer

    def only(request: Request, allowed: set[str]) -> None:
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise RequestError(f"unknown parameters: {', '.join(k[:30] for k in unknown[:5])}")

    async def page(request: Request) -> Response:
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.url.path.rsplit("/", 1)[-1]
        return Response(_static(name), media_type=STATIC[name] + "; charset=utf-8")

    async def info(request: Request) -> Response:
        only(request, set())
        run_info = await run_in_threadpool(explorer.info) if explorer is not None else None
        return JSONResponse({"limits": limits, "edge_example": ops.EDGE_EXAMPLE, "run": run_info})

    async def operations(request: Request) -> Response:
        only(request, set())
        raw = await _body(request, MAX_JSON_BYTES)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise RequestError("the body must be JSON") from None
        return JSONResponse(ops.compute(body))

    async def analyze(request: Request) -> Response:
        only(request, {"test", "channels"})
        net = need_run()
        channels = parse_int(request.query_params.get("channels"), "channels", DEFAULT_CHANNELS, 1, MAX_CHANNELS)
        pixels, label = await _image(request, net)
        return JSONResponse(await run_in_threadpool(net.analyze, pixels, channels=channels, label=label))

    async def explain(request: Request) -> Response:
        only(request, {"test", "target", "map"})
        net = need_run()
        target = parse_int(request.query_params.get("target"), "target", -1, 0, len(net.classes) - 1)
        if target < 0:
            raise RequestError("target (the class to explain) is missing")
        pixels, _ = await _image(request, net)
        method = request.query_params.get("map", "gradcam")
        return JSONResponse(await run_in_threadpool(net.explain, pixels, target, method))

    async def kernels(request: Request) -> Response:
        only(request, set())
        return Response(await run_in_threadpool(need_run().kernels_png), media_type="image/png")

    routes = [
        Route("/", _answer(page)),
        *[Route(f"/static/{name}", _answer(static)) for name in STATIC],
        Route("/api/info", _answer(info)),
        Route("/api/ops", _answer(operations), methods=["POST"]),
        Route("/api/analyze", _answer(analyze), methods=["POST"]),
        Route("/api/explain", _answer(explain), methods=["POST"]),
        Route("/api/kernels.png", _answer(kernels)),
    ]
    return Guard(Starlette(routes=routes), token, hosts, max_body=MAX_UPLOAD_BYTES)


def _listen(host: str, port: int, allow_remote: bool) -> socket.socket:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ExploreError(f"--host must be an IP address, got {host!r}") from None
    if address.is_unspecified:
        raise ExploreError(f"--host {host} listens on every address; name the one address to listen on")
    if not address.is_loopback and not allow_remote:
        raise ExploreError(f"--host {host} lets other machines reach the explorer; add --allow-remote to mean it")
    if not 0 <= port <= 65535:
        raise ExploreError(f"--port must be 0..65535, got {port}")
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if address.version == 6 else socket.AF_INET)
    except OSError as exc:
        raise ExploreError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class ExplorerServer:
    """The explorer bound to ``host:port`` (port 0: a free one), its address known before it serves.

    ``serve()`` runs it in this thread until interrupted; ``start()`` in a background thread
    (tests, the benchmark), ``stop()`` ends that.
    """

    def __init__(self, run: api.Run | None = None, *, host: str = LOOPBACK, port: int = 0,
                 allow_remote: bool = False, data_dir: str | None = None) -> None:
        self.socket = _listen(host, port, allow_remote)
        self.port = self.socket.getsockname()[1]
        self.token = new_token()
        shown = f"[{host}]" if ":" in host else host
        self.hosts: set[str] = {f"{shown}:{self.port}"}
        if ipaddress.ip_address(host).is_loopback:
            self.hosts |= {f"localhost:{self.port}", f"127.0.0.1:{self.port}"}
        self.url = f"http://{shown}:{self.port}/"
        self.remote = not ipaddress.ip_address(host).is_loopback
        self.app = create_app(run, token=self.token, hosts=self.hosts, data_dir=data_dir)
        # No access log: the page's first request carries the secret. Connections past the limit get a 503.
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """The address to open: the page with the secret (give it to no one else)."""
        return f"{self.url}?token={self.token}"

    def serve(self) -> None:
        self._server.run(sockets=[self.socket])

    def start(self) -> ExplorerServer:
        self._server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.serve, name="convzoo-explore", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.socket.close()


def open_server(run_dir: str | None = None, *, device: str = "auto", data_dir: str | None = None,
                **listen: Any) -> ExplorerServer:
    """An ``ExplorerServer`` for the run in ``run_dir`` (``convzoo.api.Run.open``: ``api.load`` with the
    command line's words in its errors), or for the operations alone without one."""
    run = api.Run.open(run_dir, device) if run_dir is not None else None
    return ExplorerServer(run, data_dir=data_dir, **listen)
