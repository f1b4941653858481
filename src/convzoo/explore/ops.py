"""The chapter's operations on the numbers the page sends, computed by ``convzoo.ops``.

A request holds an input ``(C_in, H, W)``, kernels ``(C_out, C_in, kh, kw)``, padding, stride and
dilation, and optionally a pooling after the convolution. The answer holds the output
``convzoo.ops.conv2d`` gives, each input channel's share of it (``convzoo.ops.corr2d`` per channel
pair, padded and strided: summed over the input channels they are the output, the chapter's
multi-channel sum), the output-shape formula with the request's numbers, and the pooled output.
Every size is bounded (``LIMITS``) so one request is microseconds of work.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import ops
from .validate import RequestError, bounded_int, known_fields, number_grid

LIMITS = {"side": 16, "kernel": 7, "channels": 4, "padding": 4, "stride": 4, "dilation": 4, "pool": 4,
          "magnitude": 1000.0}
POOL_MODES = ("none", "max", "avg")

# The chapter's edge detector (D2L 7.2.3): a 6x8 image of ones with a band of zeros, kernel [[1, -1]].
EDGE_EXAMPLE = {
    "input": [[[1, 1, 0, 0, 0, 0, 1, 1] for _ in range(6)]],
    "kernel": [[[[1, -1]]]],
    "padding": 0, "stride": 1, "dilation": 1, "pool": {"mode": "none", "size": 2, "stride": 2},
}


def _formula(axis: str, n: int, k: int, p: int, s: int, d: int, out: int) -> str:
    return (f"{axis}_out = \u230a({axis} + 2p \u2212 d(k\u22121) \u2212 1) / s\u230b + 1 = "
            f"\u230a({n} + 2\u00b7{p} \u2212 {d}\u00b7({k}\u22121) \u2212 1) / {s}\u230b + 1 = {out}")


def _pool(request: Any) -> dict[str, Any]:
    pool = known_fields(request, {"mode", "size", "stride"}, "pool")
    mode = pool.get("mode", "none")
    if mode not in POOL_MODES:
        raise RequestError(f"pool mode must be one of {', '.join(POOL_MODES)}, got {str(mode)[:20]!r}")
    size = bounded_int(pool.get("size", 2), "pool size", 1, LIMITS["pool"])
    return {"mode": mode, "size": size, "stride": bounded_int(pool.get("stride", size), "pool stride", 1,
                                                                LIMITS["pool"])}


def compute(request: Any) -> dict[str, Any]:
    """The answer to one operations request (see the module's docstring); ``RequestError`` when it is invalid."""
    body = known_fields(request, {"input", "kernel", "padding", "stride", "dilation", "pool"})
    side, channels = LIMITS["side"], LIMITS["channels"]
    x = torch.tensor(number_grid(body.get("input"), "input", 3, (channels, side, side), LIMITS["magnitude"]),
                     dtype=torch.float64)
    k = torch.tensor(number_grid(body.get("kernel"), "kernel", 4, (channels, channels, LIMITS["kernel"],
                                                                   LIMITS["kernel"]), LIMITS["magnitude"]),
                     dtype=torch.float64)
    p = bounded_int(body.get("padding", 0), "padding", 0, LIMITS["padding"])
    s = bounded_int(body.get("stride", 1), "stride", 1, LIMITS["stride"])
    d = bounded_int(body.get("dilation", 1), "dilation", 1, LIMITS["dilation"])
    pool = _pool(body.get("pool", {"mode": "none"}))
    c_in, h, w = x.shape
    c_out, k_in, kh, kw = k.shape
    if k_in != c_in:
        raise RequestError(f"the kernel has {k_in} input channels but the input has {c_in}")
    try:
        h_out, w_out = ops.conv2d_output_size((h, w), (kh, kw), s, p, d)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    out = ops.conv2d(x[None], k, stride=s, padding=p, dilation=d)[0]
    # Each (output, input) channel pair alone: the terms of the multi-channel sum.
    partials = torch.stack([ops.conv2d(x[None, c : c + 1], k[:, c : c + 1], stride=s, padding=p, dilation=d)[0]
                            for c in range(c_in)], dim=1)
    answer: dict[str, Any] = {
        "output": out.tolist(), "partials": partials.tolist(),
        "shape": {"input": [c_in, h, w], "kernel": [c_out, c_in, kh, kw], "output": [c_out, h_out, w_out]},
        "formula": [_formula("H", h, kh, p, s, d, h_out), _formula("W", w, kw, p, s, d, w_out)],
        "pooled": None, "pool_formula": None,
    }
    if pool["mode"] != "none":
        size, stride = pool["size"], pool["stride"]
        try:
            ph, pw = ops.pool2d_output_size((h_out, w_out), size, stride)
        except ValueError as exc:
            raise RequestError(f"pooling: {exc}") from None
        pooled = (ops.max_pool2d if pool["mode"] == "max" else ops.avg_pool2d)(out[None], size, stride)[0]
        answer["pooled"] = pooled.tolist()
        answer["pool_formula"] = [_formula("H", h_out, size, 0, stride, 1, ph), _formula("W", w_out, size, 0, stride,
                                                                                         1, pw)]
    return answer
