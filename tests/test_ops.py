"""``convzoo.ops`` against PyTorch in float64: values and gradients through one helper.

Random configurations are built valid by construction (sizes drawn after the kernel, padding and
dilation they must hold), so hypothesis discards almost nothing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from convzoo import ops
from convzoo.ops import conv as conv_module
from convzoo.ops import windows as windows_module
from convzoo.ops.shapes import pair, same_padding

RANDOM = settings(max_examples=150, deadline=None)
GRADCHECK = {"atol": 1e-8, "rtol": 1e-6}
TOL = 1e-10  # float64: both sides agree to rounding


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def ints_or_pairs(lo: int, hi: int) -> st.SearchStrategy:
    """An int or an (h, w) pair, both in ``[lo, hi]``: ops take either form."""
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


def as_pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


def size_for(extent: int, pad: int, lo: int = 1) -> st.SearchStrategy[int]:
    """Input sizes in which a window of ``extent`` fits after ``pad`` on each side."""
    return st.integers(max(lo, extent - 2 * pad), 12)


# ---------------------------------------------------------------------------------------------
# conv2d


@st.composite
def conv_configs(draw: st.DrawFn) -> dict:
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel, dilation = draw(ints_or_pairs(1, 4)), draw(ints_or_pairs(1, 3))
    k, d = as_pair(kernel), as_pair(dilation)
    padding = draw(st.one_of(ints_or_pairs(0, 3), st.just("same"), st.just("valid")))
    stride = 1 if padding == "same" else draw(ints_or_pairs(1, 4))
    pad = (0, 0) if isinstance(padding, str) else as_pair(padding)
    if padding == "same":
        pad = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)  # the smaller side of 'same'
    h, w = (draw(size_for(d[a] * (k[a] - 1) + 1, pad[a])) for a in range(2))
    return {
        "shapes": ((draw(st.integers(1, 3)), c_in, h, w), (c_out, c_in // groups, k[0], k[1])),
        "bias": draw(st.booleans()),
        "kwargs": {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups},
        "seed": draw(st.integers(0, 2**16)),
    }


def check_conv(assert_matches_torch, x_shape, w_shape, bias=True, seed=0, **kwargs) -> None:
    x, w = randn(*x_shape, seed=seed), randn(*w_shape, seed=seed + 1)
    b = randn(w_shape[0], seed=seed + 2) if bias else None
    assert_matches_torch(ops.conv2d, F.conv2d, x, w, b, **kwargs)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@RANDOM
@given(conv_configs())
def test_conv2d_matches_torch(assert_matches_torch, cfg):
    check_conv(assert_matches_torch, *cfg["shapes"], cfg["bias"], cfg["seed"], **cfg["kwargs"])


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((2, 3, 5, 7), (4, 3, 5, 7), {}),  # kernel covers the whole input: one output pixel
        ((2, 3, 5, 7), (4, 3, 7, 9), {"padding": 1}),  # ... the whole padded input
        ((1, 1, 4, 4), (1, 1, 1, 1), {}),  # 1x1 on one channel: the windows are the input itself
        ((2, 3, 6, 5), (4, 3, 1, 1), {"stride": 2}),
        ((2, 2, 11, 10), (3, 2, 2, 3), {"stride": (4, 5)}),  # stride larger than kernel: skipped pixels
        ((2, 2, 9, 9), (2, 2, 2, 2), {"stride": 3, "dilation": 3, "padding": 2}),
        ((1, 4, 6, 6), (4, 1, 3, 3), {"groups": 4, "padding": "same"}),  # depthwise
        ((1, 2, 6, 7), (3, 2, 2, 4), {"padding": "same", "dilation": (2, 1)}),  # asymmetric 'same'
    ],
)
def test_conv2d_edge_cases(assert_matches_torch, x_shape, w_shape, kwargs):
    check_conv(assert_matches_torch, x_shape, w_shape, **kwargs)


VIEWS = {
    "slice": lambda x: x[1:, :, 2:, 1:9],
    "step": lambda x: x[:, :, ::2, 1::2],
    "transpose": lambda x: x.transpose(2, 3),
    "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
    "expand": lambda x: x[:1].expand(3, -1, -1, -1),
}


@pytest.mark.parametrize("view", VIEWS.values(), ids=VIEWS.keys())
def test_ops_read_strided_views(assert_matches_torch, view):
    """The windows are an ``as_strided`` view: it must honour the input's strides and offset."""
    x, w = randn(3, 4, 9, 10), randn(2, 4, 3, 2, seed=1)
    assert_matches_torch(
        lambda x, w: ops.conv2d(view(x), w, stride=2), lambda x, w: F.conv2d(view(x), w, stride=2), x, w
    )
    assert_matches_torch(lambda x: ops.max_pool2d(view(x), 3, 2), lambda x: F.max_pool2d(view(x), 3, 2), x)
    assert_matches_torch(lambda x: ops.avg_pool2d(view(x), 2), lambda x: F.avg_pool2d(view(x), 2), x)


LAYOUTS = {
    "NCHW": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
}


@pytest.mark.parametrize("weight_layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("input_layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
def test_outputs_have_torchs_memory_format(input_layout, weight_layout, algorithm):
    """What F.conv2d and the pools give (NCHW, or channels-last for a channels-last operand), so ``.view`` works."""
    x, w = input_layout(randn(4, 3, 12, 12)), weight_layout(randn(5, 3, 5, 5, seed=1))
    pairs = [
        (ops.conv2d(x, w, padding=1, algorithm=algorithm), F.conv2d(x, w, padding=1)),
        (ops.max_pool2d(x, 3, 2), F.max_pool2d(x, 3, 2)),
        (ops.avg_pool2d(x, 2), F.avg_pool2d(x, 2)),
    ]
    for ours, theirs in pairs:
        for layout in (torch.contiguous_format, torch.channels_last):
            assert ours.is_contiguous(memory_format=layout) == theirs.is_contiguous(memory_format=layout)
    ours, theirs = pairs[0]
    if theirs.is_contiguous():  # F.conv2d's output takes .view: so must ours
        torch.testing.assert_close(ours.view(4, -1), theirs.view(4, -1))


PLAIN_LAYOUTS = {
    "one channel, channels-last": lambda: randn(2, 1, 8, 8).contiguous(memory_format=torch.channels_last),
    "strided view": lambda: randn(2, 3, 8, 16)[..., ::2],
}


@pytest.mark.parametrize("make", PLAIN_LAYOUTS.values(), ids=PLAIN_LAYOUTS.keys())
def test_inputs_that_are_not_channels_last_only_give_contiguous_outputs(make):
    """A one-channel tensor is both layouts at once, a strided view neither: F.conv2d returns NCHW for both."""
    x = make()
    w = randn(2, x.shape[1], 5, 5, seed=1)
    outputs = [ops.conv2d(x, w, algorithm=a) for a in ("im2col", "fft")]
    outputs += [ops.max_pool2d(x, 2), ops.avg_pool2d(x, 2), ops.avg_pool2d(x, 2, divisor_override=3)]
    assert F.conv2d(x, w).is_contiguous()
    assert all(y.is_contiguous() for y in outputs)


def test_1x1_conv_is_a_fully_connected_layer_per_pixel():
    x, w = randn(2, 3, 4, 5), randn(6, 3, 1, 1)
    per_pixel = torch.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    torch.testing.assert_close(ops.conv2d(x, w), per_pixel, rtol=1e-12, atol=1e-12)


def test_conv2d_gradcheck():
    x, w, b = (t.requires_grad_() for t in (randn(2, 2, 5, 4), randn(4, 1, 3, 2, seed=1), randn(4, seed=2)))

    def conv(x, w, b):
        return ops.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)

    assert torch.autograd.gradcheck(conv, (x, w, b), **GRADCHECK)
    assert torch.autograd.gradgradcheck(conv, (x, w, b), **GRADCHECK)

# Each algorithm on its own, against PyTorch's own layer (which pads for every padding mode), so no
# configuration depends on which path ``auto`` happens to pick.
CONV_CASES = {
    "plain": ((2, 3, 9, 8), (4, 3, 5, 5), {}),
    "stride-2-padding-2": ((2, 3, 9, 8), (4, 3, 3, 5), {"stride": 2, "padding": 2}),
    "stride-pair-padding-pair": ((2, 2, 11, 10), (3, 2, 4, 3), {"stride": (2, 3), "padding": (1, 2)}),
    "stride-pair-swapped": ((1, 2, 10, 11), (3, 2, 3, 4), {"stride": (3, 2), "padding": (2, 1)}),
    "same-even-kernel-dilated": ((1, 2, 7, 9), (3, 2, 4, 5), {"padding": "same", "dilation": (2, 1)}),
    "valid": ((2, 2, 6, 7), (2, 2, 3, 2), {"padding": "valid"}),
    "dilation-2-stride-pair": ((2, 2, 10, 9), (2, 2, 3, 3), {"dilation": 2, "stride": (1, 2), "padding": 1}),
    "dilation-pair": ((1, 2, 8, 11), (2, 2, 2, 3), {"dilation": (1, 3)}),
    "dilation-(1, 2)": ((2, 1, 6, 9), (2, 1, 2, 3), {"dilation": (1, 2), "padding": (0, 1)}),
    "dilation-pair-strided": ((1, 2, 11, 8), (2, 2, 3, 2), {"dilation": (3, 1), "stride": (2, 1)}),
    "groups-2": ((2, 4, 7, 6), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    "depthwise-same": ((2, 3, 6, 7), (3, 1, 5, 5), {"groups": 3, "padding": "same"}),
    "groups-dilated-strided": ((1, 4, 9, 10), (4, 2, 3, 2), {"groups": 2, "stride": 2, "dilation": (2, 1)}),
    "1x1": ((2, 3, 4, 5), (2, 3, 1, 1), {}),
    "kernel-is-the-input": ((2, 2, 5, 6), (3, 2, 5, 6), {}),
    "reflect-pair": ((1, 2, 6, 7), (3, 2, 3, 4), {"padding": (1, 2), "padding_mode": "reflect"}),
    "replicate-same": ((2, 2, 6, 5), (2, 2, 4, 3), {"padding": "same", "padding_mode": "replicate"}),
    "circular-strided": ((1, 3, 7, 6), (2, 3, 3, 3), {"padding": 2, "stride": 2, "padding_mode": "circular"}),
    "circular-same-dilated": ((1, 2, 8, 7), (2, 2, 3, 2), {"padding": "same", "dilation": 2,
                                                             "padding_mode": "circular"}),
}


def torch_conv2d(x, w, b=None, **kwargs):
    """PyTorch's ``nn.Conv2d`` computation with ``w`` and ``b`` (its own padding for every mode)."""
    layer = nn.Conv2d(x.shape[1], w.shape[0], tuple(w.shape[2:]), bias=b is not None, **kwargs)
    return layer._conv_forward(x, w, b)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
def test_each_conv2d_algorithm_matches_torch(assert_matches_torch, algorithm, case, bias):
    x_shape, w_shape, kwargs = case
    x, w = randn(*x_shape), randn(*w_shape, seed=1)
    b = randn(w_shape[0], seed=2) if bias else None
    assert_matches_torch(
        lambda *t: ops.conv2d(*t, **kwargs, algorithm=algorithm), lambda *t: torch_conv2d(*t, **kwargs), x, w, b
    )


@pytest.fixture
def conv_paths(monkeypatch) -> list[str]:
    """The algorithms ``conv2d`` runs, in order: each path's function is wrapped to record its call."""
    calls: list[str] = []

    def recorder(name: str, original):
        def record(*args):
            calls.append(name)
            return original(*args)
        return record

    for name in ("im2col", "fft"):
        monkeypatch.setattr(conv_module, f"_conv_{name}", recorder(name, getattr(conv_module, f"_conv_{name}")))
    return calls


# ``auto``: the FFT for kernels of 5x5 (25 taps) and more at stride 1 without dilation when
# N * (C_in + C_out) >= C_out * C_in / groups; im2col otherwise.
AUTO_CASES = {
    "5x5, 2 * (3 + 6) = 18 >= 6 * 3": ((2, 3, 7, 8), (6, 3, 5, 5), {}, "fft"),
    "5x5, 1 * (3 + 6) = 9 < 18": ((1, 3, 7, 8), (6, 3, 5, 5), {}, "im2col"),
    "5x5, 2 * (4 + 8) = 24 < 32": ((2, 4, 6, 7), (8, 4, 5, 5), {}, "im2col"),
    "5x5 groups 2, 1 * (4 + 4) = 8 >= 4 * 4 / 2": ((1, 4, 6, 6), (4, 2, 5, 5), {"groups": 2}, "fft"),
    "5x5 groups 1, 1 * (4 + 4) = 8 < 16": ((1, 4, 6, 6), (4, 4, 5, 5), {}, "im2col"),
    "7x4 = 28 taps": ((4, 1, 9, 9), (2, 1, 7, 4), {}, "fft"),
    "4x7 = 28 taps": ((4, 1, 9, 9), (2, 1, 4, 7), {}, "fft"),
    "4x6 = 24 taps": ((4, 1, 9, 9), (2, 1, 4, 6), {}, "im2col"),
    "3x3": ((4, 1, 9, 9), (2, 1, 3, 3), {}, "im2col"),
    "5x5 padded": ((4, 1, 6, 6), (2, 1, 5, 5), {"padding": 2}, "fft"),
    "5x5 stride (1, 2)": ((4, 1, 9, 9), (2, 1, 5, 5), {"stride": (1, 2)}, "im2col"),
    "5x5 stride (2, 1)": ((4, 1, 9, 9), (2, 1, 5, 5), {"stride": (2, 1)}, "im2col"),
    "5x5 dilation (1, 2)": ((4, 1, 9, 13), (2, 1, 5, 5), {"dilation": (1, 2)}, "im2col"),
    "5x5 dilation (2, 1)": ((4, 1, 13, 9), (2, 1, 5, 5), {"dilation": (2, 1)}, "im2col"),
}


@pytest.mark.parametrize("case", AUTO_CASES.values(), ids=AUTO_CASES.keys())
def test_auto_picks_the_fft_for_large_kernels_at_stride_1_and_large_batches(conv_paths, case):
    x_shape, w_shape, kwargs, expected = case
    x, w = randn(*x_shape), randn(*w_shape, seed=1)
    torch.testing.assert_close(ops.conv2d(x, w, **kwargs), F.conv2d(x, w, **kwargs), rtol=TOL, atol=TOL)
    assert conv_paths == [expected]
    conv_paths.clear()
    ops.conv2d(x, w, **kwargs, algorithm="auto")  # the default, spelled out
    assert conv_paths == [expected]


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
def test_an_explicit_algorithm_is_the_path_that_runs(conv_paths, algorithm):
    ops.conv2d(randn(4, 1, 9, 9), randn(2, 1, 5, 5, seed=1), algorithm=algorithm)  # auto would take the FFT
    ops.conv2d(randn(1, 3, 9, 9), randn(6, 3, 3, 3, seed=1), algorithm=algorithm)  # ... and im2col here
    assert conv_paths == [algorithm, algorithm]



# ---------------------------------------------------------------------------------------------
# im2col / col2im: the windows themselves, against unfold / fold


def _as_unfold(cols: torch.Tensor) -> torch.Tensor:
    """``(C, kh, kw, N, H_out, W_out) -> (N, C * kh * kw, H_out * W_out)``, ``F.unfold``'s layout."""
    c, kh, kw, n, ho, wo = cols.shape
    return cols.permute(3, 0, 1, 2, 4, 5).reshape(n, c * kh * kw, ho * wo)


@st.composite
def window_configs(draw: st.DrawFn) -> dict:
    k, s, d = (as_pair(draw(ints_or_pairs(1, 3))) for _ in range(3))
    h, w = (draw(size_for(d[a] * (k[a] - 1) + 1, 0)) for a in range(2))
    out = ops.conv2d_output_size((h, w), k, s, 0, d)
    return {"n": draw(st.integers(1, 2)), "c": draw(st.integers(1, 3)), "size": (h, w), "kernel": k,
            "stride": s, "dilation": d, "out": out, "seed": draw(st.integers(0, 2**16))}


@RANDOM
@given(window_configs())
def test_im2col_and_col2im_match_unfold_and_fold(assert_matches_torch, cfg):
    k, s, d, out, size = cfg["kernel"], cfg["stride"], cfg["dilation"], cfg["out"], cfg["size"]
    x = randn(cfg["n"], cfg["c"], *size, seed=cfg["seed"])
    assert_matches_torch(
        lambda x: _as_unfold(ops.im2col(x, k, s, d, out)),
        lambda x: F.unfold(x, k, dilation=d, stride=s), x,
    )
    cols = randn(cfg["c"], *k, cfg["n"], *out, seed=cfg["seed"] + 1)
    assert_matches_torch(
        lambda cols: ops.col2im(cols, size, k, s, d),
        lambda cols: F.fold(_as_unfold(cols), size, k, dilation=d, stride=s), cols,
    )


@pytest.mark.parametrize("stride", [(1, 1), (2, 3)])  # overlapping windows, and not
def test_im2col_col2im_gradcheck(stride):
    k, d, size = (2, 3), (1, 1), (5, 7)
    out = ops.conv2d_output_size(size, k, stride, 0, d)
    x, cols = randn(2, 2, *size).requires_grad_(), randn(2, *k, 2, *out, seed=1).requires_grad_()
    for fn, arg in (
        (lambda x: ops.im2col(x, k, stride, d, out), x),
        (lambda c: ops.col2im(c, size, k, stride, d), cols),
    ):
        assert torch.autograd.gradcheck(fn, (arg,), **GRADCHECK)
        assert torch.autograd.gradgradcheck(fn, (arg,), **GRADCHECK)

# col2im has two paths: windows that cannot overlap (no dilation, stride >= kernel) are copied
# back through the strided view; the others are accumulated tap by tap. Each against F.fold.
COL2IM_PATHS = {
    "stride = kernel": ((2, 3), (2, 3), (1, 1), "copy"),
    "stride > kernel": ((2, 2), (3, 4), (1, 1), "copy"),
    "stride < kernel in rows": ((2, 1), (1, 2), (1, 1), "accumulate"),
    "stride < kernel in columns": ((1, 2), (2, 1), (1, 1), "accumulate"),
    "dilation (2, 1)": ((2, 2), (2, 2), (2, 1), "accumulate"),
    "dilation (1, 2)": ((2, 2), (2, 2), (1, 2), "accumulate"),
    "dilation (2, 2), stride > extent": ((2, 2), (4, 4), (2, 2), "accumulate"),
}


@pytest.mark.parametrize("case", COL2IM_PATHS.values(), ids=COL2IM_PATHS.keys())
def test_col2im_copies_disjoint_windows_and_accumulates_overlapping_ones(assert_matches_torch, monkeypatch, case):
    k, s, d, expected = case
    size = (9, 10)
    out = ops.conv2d_output_size(size, k, s, 0, d)
    cols = randn(2, *k, 3, *out)
    views = []  # the copy path writes through the windows' strided view; the other never makes one
    with monkeypatch.context() as m:
        view = windows_module._window_view
        m.setattr(windows_module, "_window_view", lambda *args: views.append(args) or view(*args))
        ops.col2im(cols, size, k, s, d)
    assert ("copy" if views else "accumulate") == expected
    assert_matches_torch(
        lambda cols: ops.col2im(cols, size, k, s, d),
        lambda cols: F.fold(_as_unfold(cols), size, k, dilation=d, stride=s), cols,
    )



# ---------------------------------------------------------------------------------------------
# pooling


@st.composite
def pool_configs(draw: st.DrawFn, dilation: bool) -> dict:
    kernel = draw(ints_or_pairs(1, 4))
    k = as_pair(kernel)
    padding = draw(st.tuples(st.integers(0, k[0] // 2), st.integers(0, k[1] // 2)))
    d = as_pair(draw(ints_or_pairs(1, 3))) if dilation else (1, 1)
    h, w = (draw(size_for(d[a] * (k[a] - 1) + 1, padding[a])) for a in range(2))
    stride = draw(st.one_of(st.none(), ints_or_pairs(1, 4)))
    kwargs = {"stride": stride, "padding": padding, "ceil_mode": draw(st.booleans())}
    if dilation:
        kwargs["dilation"] = d
    return {"shape": (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), "kernel": kernel,
            "kwargs": kwargs, "seed": draw(st.integers(0, 2**16))}


def _has_window_in_padding_only(cfg: dict) -> bool:
    """Whether dilation lets some window skip every input pixel (all its taps in the padding)."""
    kw = cfg["kwargs"]
    k, d, p = as_pair(cfg["kernel"]), kw["dilation"], kw["padding"]
    s = k if kw["stride"] is None else as_pair(kw["stride"])
    out = ops.pool2d_output_size(cfg["shape"][2:], k, s, p, d, kw["ceil_mode"])
    return any(
        all(not 0 <= y * s[a] - p[a] + i * d[a] < cfg["shape"][2 + a] for i in range(k[a]))
        for a in range(2) for y in range(out[a])
    )


@RANDOM
@given(pool_configs(dilation=True))
def test_max_pool2d_matches_torch(assert_matches_torch, cfg):
    # PyTorch's gradient for a window of padding only is arbitrary: see the test below.
    assume(not _has_window_in_padding_only(cfg))
    # float64 randn has no ties, so both sides route each gradient to the same element.
    x = randn(*cfg["shape"], seed=cfg["seed"])
    assert_matches_torch(ops.max_pool2d, F.max_pool2d, x, kernel_size=cfg["kernel"], **cfg["kwargs"])


@pytest.mark.parametrize(
    "kwargs",
    [{"kernel_size": 3, "stride": 1, "padding": 1}, {"kernel_size": (2, 3), "stride": 2, "ceil_mode": True},
     {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2}],
)
def test_max_pool2d_ties_send_the_gradient_to_the_first_maximum(assert_matches_torch, kwargs):
    x = torch.randint(0, 3, (2, 3, 7, 6), generator=torch.Generator().manual_seed(0)).double()
    assert_matches_torch(ops.max_pool2d, F.max_pool2d, x, **kwargs)


def test_max_pool2d_window_in_padding_only():
    """Taps at -1 and 2 of a width-2 input: the maximum is -inf and no input gets a gradient.

    ``F.max_pool2d`` agrees on the value but routes the gradient of such a window to an arbitrary
    input element (it differs between channels), so the random comparison above leaves it out.
    """
    x = randn(1, 2, 1, 2).requires_grad_()
    y = ops.max_pool2d(x, (1, 2), padding=(0, 1), dilation=3)
    assert torch.equal(y, F.max_pool2d(x, (1, 2), padding=(0, 1), dilation=3))
    assert torch.equal(y, torch.full((1, 2, 1, 1), -torch.inf, dtype=torch.float64))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@RANDOM
@given(pool_configs(dilation=False), st.booleans(), st.one_of(st.none(), st.integers(1, 5)))
def test_avg_pool2d_matches_torch(assert_matches_torch, cfg, count_include_pad, divisor_override):
    x = randn(*cfg["shape"], seed=cfg["seed"])
    assert_matches_torch(
        ops.avg_pool2d, F.avg_pool2d, x, kernel_size=cfg["kernel"], **cfg["kwargs"],
        count_include_pad=count_include_pad, divisor_override=divisor_override,
    )


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1)])
def test_global_avg_pool2d_matches_adaptive_avg_pool(assert_matches_torch, shape):
    assert_matches_torch(ops.global_avg_pool2d, lambda x: F.adaptive_avg_pool2d(x, 1), randn(*shape))


def test_pooling_gradcheck():
    x = randn(2, 2, 6, 5).requires_grad_()
    for pool in (
        lambda x: ops.max_pool2d(x, 3, 2, padding=1, dilation=(1, 2), ceil_mode=True),
        lambda x: ops.avg_pool2d(x, (3, 2), 2, padding=1, ceil_mode=True, count_include_pad=False),
    ):
        assert torch.autograd.gradcheck(pool, (x,), **GRADCHECK)
        assert torch.autograd.gradgradcheck(pool, (x,), **GRADCHECK)


def test_seed_pool2d_worked_example():
    X = torch.arange(9.0).reshape(3, 3)
    torch.testing.assert_close(ops.pool2d(X, (2, 2)), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    torch.testing.assert_close(ops.pool2d(X, (2, 2), mode="avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


@pytest.mark.parametrize("pool_size", [(2, 2), (3, 1), (1, 4)])
def test_seed_pool2d_is_pooling_with_stride_1(pool_size):
    X = randn(5, 6)
    for mode, pool in (("max", ops.max_pool2d), ("avg", ops.avg_pool2d)):
        torch.testing.assert_close(ops.pool2d(X, pool_size, mode), pool(X[None, None], pool_size, 1)[0, 0])

POOL_CASES = {
    "kernel 3 stride 2 padding 1": {"kernel_size": 3, "stride": 2, "padding": 1},
    "pair kernel, default stride": {"kernel_size": (3, 2)},
    "pair stride and padding": {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)},
    "swapped pairs": {"kernel_size": (3, 2), "stride": (2, 1), "padding": (0, 1)},
    "ceil_mode, last window past the padding": {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    "ceil_mode with pairs": {"kernel_size": (2, 3), "stride": (3, 2), "padding": (1, 1), "ceil_mode": True},
}


@pytest.mark.parametrize("kwargs", POOL_CASES.values(), ids=POOL_CASES.keys())
def test_pools_match_torch_on_fixed_configurations(assert_matches_torch, kwargs):
    x = randn(2, 3, 7, 8) - 3  # mostly negative: padding with zeros instead of -inf would win the max
    assert_matches_torch(ops.max_pool2d, F.max_pool2d, x, **kwargs)
    assert_matches_torch(ops.max_pool2d, F.max_pool2d, x, **kwargs, dilation=(2, 1))
    for count_include_pad in (True, False):
        assert_matches_torch(ops.avg_pool2d, F.avg_pool2d, x, **kwargs, count_include_pad=count_include_pad)
    assert_matches_torch(ops.avg_pool2d, F.avg_pool2d, x, **kwargs, divisor_override=3)


def test_ceil_mode_pads_each_axis_by_its_own_size(assert_matches_torch):
    """More channels than columns: the extra far-side padding of the width comes from the width (3), not C (5)."""
    x = randn(2, 5, 5, 3) - 3
    assert_matches_torch(ops.max_pool2d, F.max_pool2d, x, kernel_size=2, ceil_mode=True)
    assert_matches_torch(ops.avg_pool2d, F.avg_pool2d, x.transpose(2, 3), kernel_size=2, ceil_mode=True)


def test_ops_keep_their_inputs_device():
    """Every tensor an op makes follows its input: checked on PyTorch's meta device (shapes, no data), which
    mixes with no other device, so a helper tensor left on the CPU fails without an accelerator."""
    x, w = torch.empty(2, 3, 7, 8, device="meta"), torch.empty(4, 3, 5, 5, device="meta")
    pairs = [
        (ops.avg_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)),
        (ops.avg_pool2d(x, 3, 2, 1, count_include_pad=False), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
        (ops.max_pool2d(x, 3, 2, 1, ceil_mode=True), F.max_pool2d(x, 3, 2, 1, ceil_mode=True)),
        (ops.conv2d(x, w, padding=1, algorithm="im2col"), F.conv2d(x, w, padding=1)),
        (ops.conv2d(x, w, padding=1, algorithm="fft"), F.conv2d(x, w, padding=1)),
    ]
    for ours, theirs in pairs:
        assert (ours.device, ours.shape) == (theirs.device, theirs.shape)


def test_avg_pool2d_counts_padding_in_the_divisor_by_hand():
    """A 2x2 input of ones, 3x3 windows at stride 1 with padding 1: each window sees 4 ones."""
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    expected = {True: 4 / 9, False: 1.0}  # padding counted: 4 ones / 9 taps; not counted: 4 ones / 4 inputs
    for include, value in expected.items():
        y = ops.avg_pool2d(x, 3, 1, 1, count_include_pad=include)[0, 0]
        torch.testing.assert_close(y, torch.full((2, 2), value, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(ops.avg_pool2d(x, 3, 1, 1), torch.full((1, 1, 2, 2), 4 / 9, dtype=torch.float64))
    torch.testing.assert_close(ops.avg_pool2d(x, 3, 1, 1, divisor_override=2)[0, 0],
                               torch.full((2, 2), 2.0, dtype=torch.float64))


def test_seed_pool2d_averages_integer_input_as_floats():
    X = torch.arange(9).reshape(3, 3)
    torch.testing.assert_close(ops.pool2d(X, 2, "avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    torch.testing.assert_close(ops.pool2d(X, 2), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))



# ---------------------------------------------------------------------------------------------
# batch norm


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 5)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_torch(assert_matches_torch, shape, training, affine):
    x, c = randn(*shape), shape[1]
    weight, bias = (randn(c, seed=1), randn(c, seed=2)) if affine else (None, None)
    mean, var = randn(c, seed=3), randn(c, seed=4).exp()
    ours_stats, theirs_stats = (mean.clone(), var.clone()), (mean.clone(), var.clone())
    assert_matches_torch(
        lambda x, w, b: ops.batch_norm(x, *ours_stats, w, b, training, 0.3, 1e-5),
        lambda x, w, b: F.batch_norm(x, *theirs_stats, w, b, training, 0.3, 1e-5),
        x, weight, bias,
    )
    for ours, theirs in zip(ours_stats, theirs_stats, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert torch.equal(ours_stats[0], mean) != training  # moved in training, untouched in eval


def test_batch_norm_without_running_stats_uses_batch_stats(assert_matches_torch):
    assert_matches_torch(
        lambda x: ops.batch_norm(x, None, None, training=True),
        lambda x: F.batch_norm(x, None, None, training=True), randn(4, 3, 2, 2),
    )

def test_batch_norm_defaults_are_torchs(assert_matches_torch):
    """Evaluation by default, momentum 0.1 and eps 1e-5 (running statistics compared after a step)."""
    x, mean, var = randn(6, 3, 2, 2), randn(3, seed=1), randn(3, seed=2).exp()
    assert_matches_torch(lambda x: ops.batch_norm(x, mean, var), lambda x: F.batch_norm(x, mean, var), x)
    ours, theirs = (mean.clone(), var.clone()), (mean.clone(), var.clone())
    assert_matches_torch(lambda x: ops.batch_norm(x, *ours, training=True),
                         lambda x: F.batch_norm(x, *theirs, training=True), x)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_batch_norm_trains_on_two_values_per_channel(assert_matches_torch):
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ours, theirs = (mean.clone(), var.clone()), (mean.clone(), var.clone())
    assert_matches_torch(lambda x: ops.batch_norm(x, *ours, training=True),
                         lambda x: F.batch_norm(x, *theirs, training=True), randn(2, 3))
    torch.testing.assert_close(ours, theirs)


def test_batch_norm_moves_running_statistics_only_when_both_are_given():
    x = randn(5, 3)
    mean = randn(3, seed=1)
    before = mean.clone()
    expected = (x - x.mean(0)) / (x.var(0, correction=0) + 1e-5).sqrt()
    torch.testing.assert_close(ops.batch_norm(x, mean, None, training=True), expected)
    assert torch.equal(mean, before)


def test_batch_norm_running_statistics_keep_their_dtype():
    """float32 running estimates from a float64 batch, by hand: (1 - m) * old + m * new."""
    x = randn(4, 2)
    mean, var = torch.zeros(2), torch.ones(2)
    ops.batch_norm(x, mean, var, training=True, momentum=0.5)
    assert mean.dtype == var.dtype == torch.float32
    torch.testing.assert_close(mean, (0.5 * x.mean(0)).float())
    torch.testing.assert_close(var, (0.5 + 0.5 * x.var(0, correction=1)).float())



# ---------------------------------------------------------------------------------------------
# the seed's corr2d family


def test_corr2d_worked_example():
    X, K = torch.arange(9.0).reshape(3, 3), torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    expected = torch.tensor([[19.0, 25.0], [37.0, 43.0]])
    torch.testing.assert_close(ops.corr2d(X, K), expected)
    torch.testing.assert_close(ops.corr2d_loop(X, K), expected)
    # The seed passes integer tensors and gets floats back.
    torch.testing.assert_close(ops.corr2d(X.long(), K.long()), expected)
    torch.testing.assert_close(ops.corr2d_loop(X.long(), K.long()), expected)


def test_corr2d_multi_in_and_out_worked_example():
    X = torch.stack([torch.arange(9.0).reshape(3, 3), torch.arange(1.0, 10.0).reshape(3, 3)])
    K = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])
    torch.testing.assert_close(ops.corr2d_multi_in(X, K), torch.tensor([[56.0, 72.0], [104.0, 120.0]]))
    K3 = torch.stack([K, K + 1, K + 2])
    Y = ops.corr2d_multi_in_out(X, K3)
    assert Y.shape == (3, 2, 2)
    for i in range(3):
        torch.testing.assert_close(Y[i], ops.corr2d_multi_in(X, K3[i]))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 4), st.integers(0, 4), st.integers(0, 2**16))
def test_corr2d_equals_the_loop(kh, kw, extra_h, extra_w, seed):
    X, K = randn(kh + extra_h, kw + extra_w, seed=seed), randn(kh, kw, seed=seed + 1)
    torch.testing.assert_close(ops.corr2d(X, K), ops.corr2d_loop(X, K), rtol=1e-12, atol=1e-12)


def test_corr2d_gradients_match_the_loop(assert_matches_torch):
    assert_matches_torch(ops.corr2d, ops.corr2d_loop, randn(6, 7), randn(3, 2, seed=1))


def test_convolve2d_flips_the_kernel():
    X, K = randn(6, 7), randn(3, 2, seed=1)
    torch.testing.assert_close(ops.convolve2d(X, K), ops.corr2d(X, K.flip(0, 1)))
    assert not torch.allclose(ops.convolve2d(X, K), ops.corr2d(X, K))
    symmetric = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(ops.convolve2d(X, symmetric), ops.corr2d(X, symmetric))

def test_corr2d_promotes_to_the_widest_float_of_its_arguments():
    X, K = torch.arange(9).reshape(3, 3), torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    expected = torch.tensor([[19.0, 25.0], [37.0, 43.0]], dtype=torch.float64)
    for corr in (ops.corr2d, ops.corr2d_loop):
        torch.testing.assert_close(corr(X, K), expected)  # integer input, float64 kernel: float64
        torch.testing.assert_close(corr(X.double(), K.long()), expected)  # and the other way round
        torch.testing.assert_close(corr(X.float(), K), expected)  # float32 and float64: float64
    for X3, K4 in ((X[None], K[None, None]), (X[None].double(), K[None, None].long())):
        torch.testing.assert_close(ops.corr2d_multi_in_out(X3, K4), expected[None])



def test_learning_the_edge_kernel():
    """The seed's example: recover ``K = [[1, -1]]`` from ``X`` and its edge map by gradient descent."""
    from convzoo.layers import Conv2D

    torch.manual_seed(0)
    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    Y = ops.corr2d(X, torch.tensor([[1.0, -1.0]]))
    conv, lr = Conv2D((1, 2)), 3e-2
    conv.bias.requires_grad_(False)  # as in the seed, which leaves the bias out for simplicity
    for _ in range(60):
        loss = ((conv(X) - Y) ** 2).sum()
        conv.zero_grad()
        loss.backward()
        with torch.no_grad():
            conv.weight -= lr * conv.weight.grad
    assert loss.item() < 1e-4
    torch.testing.assert_close(conv.weight.detach(), torch.tensor([[1.0, -1.0]]), rtol=0, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# output sizes and argument checking


def test_output_size_formulas():
    assert ops.conv2d_output_size(100, 3, padding=2) == (102, 102)
    assert ops.conv2d_output_size((3, 5), (3, 5), padding=(1, 2)) == (3, 5)
    assert ops.conv2d_output_size(224, 11, stride=4, padding=1) == (54, 54)  # AlexNet's first layer
    assert ops.conv2d_output_size(8, 3, stride=3, dilation=2) == (2, 2)
    assert ops.pool2d_output_size(54, 3, 2) == (26, 26)
    assert ops.pool2d_output_size(28, 2) == (14, 14)  # stride defaults to the kernel
    assert ops.pool2d_output_size(5, 2, ceil_mode=True) == (3, 3)
    assert ops.pool2d_output_size(5, 3, 2, padding=1, ceil_mode=True) == (3, 3)  # a 4th would start in padding


@RANDOM
@given(conv_configs())
def test_conv2d_output_size_matches_torch(cfg):
    (_, _, h, w), (_, _, kh, kw) = cfg["shapes"]
    kwargs = dict(cfg["kwargs"], groups=1)
    torch_size = tuple(F.conv2d(torch.zeros(1, 1, h, w), torch.zeros(1, 1, kh, kw), **kwargs).shape[2:])
    if kwargs["padding"] == "same":  # resolved inside conv2d, not by the formula
        ours_size = tuple(ops.conv2d(torch.zeros(1, 1, h, w), torch.zeros(1, 1, kh, kw), **kwargs).shape[2:])
        assert ours_size == torch_size == (h, w)
    else:  # 'valid' is no padding
        padding = 0 if kwargs["padding"] == "valid" else kwargs["padding"]
        assert ops.conv2d_output_size((h, w), (kh, kw), kwargs["stride"], padding, kwargs["dilation"]) == torch_size


@RANDOM
@given(pool_configs(dilation=True))
def test_pool2d_output_size_matches_torch(cfg):
    size = tuple(F.max_pool2d(torch.zeros(cfg["shape"]), cfg["kernel"], **cfg["kwargs"]).shape[2:])
    assert ops.pool2d_output_size(cfg["shape"][2:], cfg["kernel"], **cfg["kwargs"]) == size

def test_output_size_defaults_and_each_axis():
    assert ops.conv2d_output_size(5, 3) == (3, 3)  # stride 1, no padding, no dilation
    # rows: (7 + 2 - 2 - 1) // 2 + 1 = 4; columns: (9 + 0 - 2 - 1) // 3 + 1 = 3
    assert ops.conv2d_output_size((7, 9), (3, 2), stride=(2, 3), padding=(1, 0), dilation=(1, 2)) == (4, 3)
    assert ops.conv2d_output_size((9, 7), (2, 3), stride=(3, 2), padding=(0, 1), dilation=(2, 1)) == (3, 4)
    assert ops.pool2d_output_size(6, 3) == (2, 2)  # stride = kernel, no padding, floor
    assert ops.pool2d_output_size((6, 9), (3, 2), None, (1, 0)) == (2, 4)
    assert ops.pool2d_output_size(7, 3, dilation=2) == (1, 1)  # extent 5: one window at stride 3


@pytest.mark.parametrize(
    "size, kernel, stride, padding",
    [(5, 2, 3, 1), ((5, 6), (2, 3), (3, 2), (1, 1)), ((6, 5), (3, 2), (2, 3), (1, 1)), (4, 2, 2, 0), (8, 3, 3, 1)],
)
def test_ceil_mode_output_size_matches_torch_at_its_edge(size, kernel, stride, padding):
    """Sizes where the last window starts exactly where the input and its left padding end (then dropped)."""
    y = F.max_pool2d(torch.zeros(1, 1, *as_pair(size)), kernel, stride, padding, ceil_mode=True)
    assert ops.pool2d_output_size(size, kernel, stride, padding, ceil_mode=True) == tuple(y.shape[2:])


def test_same_padding_puts_the_odd_pixel_last():
    """``(left, right, top, bottom)``: PyTorch's 'same' pads ``total // 2`` first and the rest after."""
    assert same_padding(3) == (1, 1, 1, 1)
    assert same_padding((4, 5)) == (2, 2, 1, 2)  # totals: 3 rows, 4 columns
    assert same_padding((2, 3), (3, 2)) == (2, 2, 1, 2)  # totals: 3 rows, 4 columns
    assert same_padding((3, 4)) == (1, 2, 1, 1)  # totals: 2 rows, 3 columns
    assert same_padding(1) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"^kernel_size must be an int or a pair of ints, got \(3, 3, 3\)$"):
        same_padding((3, 3, 3))
    with pytest.raises(ValueError, match=r"^dilation must be an int or a pair of ints, got \(1, 1, 1\)$"):
        same_padding(3, (1, 1, 1))


def test_pair_accepts_ints_and_pairs_of_ints_only():
    assert pair(3, "size") == (3, 3)
    assert pair((2, 5), "size") == (2, 5)
    assert pair([4, 1], "size") == (4, 1)
    for bad in (True, 1.5, (1, True), (1, 2.0), ("1", 2), (1,), (1, 2, 3), None):
        with pytest.raises(ValueError, match=r"^size must be an int or a pair of ints, got "):
            pair(bad, "size")



X1, X4, K3 = randn(1, 1, 5, 5), randn(1, 4, 5, 5), randn(1, 1, 3, 3)  # 5x5 inputs, a 3x3 kernel
PAIR = "must be an int or a pair of ints, got"
FOUR_D = r"input must be 4-D \(N, C, H, W\), got shape"
NO_STATS = r"^evaluation without running statistics needs training=True$"

# Each message matched from its first character (``^``): a mutant that garbles the message, or
# names another argument, fails the match.
INVALID = [
    (lambda: ops.conv2d(X1[..., :3, :3], randn(1, 1, 5, 5)), r"^kernel_size \(5, 5\).*larger than .* input 3x3$"),
    (lambda: ops.conv2d(X1[..., :3, :3], randn(1, 1, 5, 4), padding=(0, 1)), r"^kernel_size \(5, 4\).*input 3x5$"),
    (lambda: ops.conv2d(X1, randn(1, 1, 2, 2), dilation=5), r"^kernel_size \(2, 2\) \(extent 6.*padded input 5x5$"),
    (lambda: ops.conv2d(randn(1, 1, 9, 9), K3, dilation=5),
     r"^kernel_size \(3, 3\) \(extent 11 with dilation \(5, 5\)\)"),
    (lambda: ops.conv2d(X1, K3, stride=0), r"^stride must be positive, got \(0, 0\)$"),
    (lambda: ops.conv2d(X1, K3, stride=(1, 0)), r"^stride must be positive, got \(1, 0\)$"),
    (lambda: ops.conv2d(X1, K3, stride=(1, 2, 3)), rf"^stride {PAIR} \(1, 2, 3\)$"),
    (lambda: ops.conv2d(X1, K3, padding=-1), r"^padding must be non-negative, got \(-1, -1\)$"),
    (lambda: ops.conv2d(X1, K3, padding=(0, -1)), r"^padding must be non-negative, got \(0, -1\)$"),
    (lambda: ops.conv2d(X1, K3, padding=(1, 2, 3)), rf"^padding {PAIR} \(1, 2, 3\)$"),
    (lambda: ops.conv2d(X1, K3, dilation=0), r"^dilation must be positive, got \(0, 0\)$"),
    (lambda: ops.conv2d(X1, K3, dilation=[1, 2, 3]), rf"^dilation {PAIR} \[1, 2, 3\]$"),
    (lambda: ops.conv2d(X1, K3, padding="same", stride=2), r"^padding='same' needs stride 1, got stride \(2, 2\)$"),
    (lambda: ops.conv2d(X1, K3, padding="same", stride=(1, 2)), r"^padding='same' needs stride 1, got .* \(1, 2\)$"),
    (lambda: ops.conv2d(X1, K3, padding="full"), r"^padding must be an int, a pair, 'valid' or 'same', got 'full'$"),
    (lambda: ops.conv2d(X1, K3, groups=0), r"^groups must be a positive int, got 0$"),
    (lambda: ops.conv2d(X4, randn(2, 2, 3, 3), groups=2.0), r"^groups must be a positive int, got 2\.0$"),
    (lambda: ops.conv2d(X4, randn(3, 2, 3, 3), groups=3), r"^in_channels 4 is not divisible by groups 3$"),
    (lambda: ops.conv2d(X4, K3.expand(3, 2, 3, 3), groups=2), r"^out_channels 3 is not divisible by groups 2$"),
    (lambda: ops.conv2d(X4[:, :3], randn(2, 2, 3, 3)), r"^input has 3 channels but weight expects 2 \(2 per group x 1"),
    (lambda: ops.conv2d(X4, randn(2, 1, 3, 3), groups=2),
     r"^input has 4 channels but weight expects 2 \(1 per group x 2 "),
    (lambda: ops.conv2d(X1, K3, randn(2)), r"^bias must have shape \(1,\), got \(2,\)$"),
    (lambda: ops.conv2d(randn(2, 5, 5), K3), rf"^{FOUR_D} \(2, 5, 5\)$"),
    (lambda: ops.conv2d(X1, randn(1, 3, 3)), r"^weight must be 4-D.*got shape \(1, 3, 3\)$"),
    (lambda: ops.conv2d(X1, K3, algorithm="winograd"),
     r"^algorithm must be 'auto', 'im2col' or 'fft', got 'winograd'$"),
    (lambda: ops.max_pool2d(X1, 3, padding=2), r"^padding \(2, 2\) must be at most half of kernel_size \(3, 3\)$"),
    (lambda: ops.avg_pool2d(X1, (4, 2), padding=(1, 2)), r"^padding \(1, 2\) must be at most half of .* \(4, 2\)$"),
    (lambda: ops.max_pool2d(randn(1, 1, 2, 2), 3), r"^kernel_size \(3, 3\).*larger than the padded input 2x2$"),
    (lambda: ops.max_pool2d(X1, 2, stride=0), r"^stride must be positive, got \(0, 0\)$"),
    (lambda: ops.max_pool2d(X1, (2, 2, 2)), rf"^kernel_size {PAIR} \(2, 2, 2\)$"),
    (lambda: ops.max_pool2d(X1, 2, stride=(1, 1, 1)), rf"^stride {PAIR} \(1, 1, 1\)$"),
    (lambda: ops.max_pool2d(X1, 2, padding=(1, 1, 1)), rf"^padding {PAIR} \(1, 1, 1\)$"),
    (lambda: ops.max_pool2d(X1, 2, dilation=(1, 1, 1)), rf"^dilation {PAIR} \(1, 1, 1\)$"),
    (lambda: ops.max_pool2d(randn(5, 5), 2), rf"^{FOUR_D} \(5, 5\)$"),
    (lambda: ops.avg_pool2d(randn(5, 5), 2), rf"^{FOUR_D} \(5, 5\)$"),
    (lambda: ops.global_avg_pool2d(randn(5, 5)), rf"^{FOUR_D} \(5, 5\)$"),
    (lambda: ops.avg_pool2d(X1, 2, divisor_override=0), r"^divisor_override must be non-zero$"),
    (lambda: ops.pool2d(randn(3, 3), 2, mode="min"), r"^mode must be 'max' or 'avg', got 'min'$"),
    (lambda: ops.pool2d(randn(3, 3, 1), 2), r"^X must be 2-D, got shape \(3, 3, 1\)$"),
    (lambda: ops.pool2d(randn(3, 3), (1, 2, 3)), rf"^pool_size {PAIR} \(1, 2, 3\)$"),
    (lambda: ops.pool2d(randn(3, 3), 0), r"^kernel_size must be positive, got \(0, 0\)$"),
    (lambda: ops.pool2d(randn(2, 2), 3), r"^kernel_size \(3, 3\) \(extent 3 with dilation \(1, 1\)\) .* input 2x2$"),
    (lambda: ops.corr2d(randn(3, 3), randn(4, 2)), r"^kernel_size \(4, 2\).*padded input 3x3$"),
    (lambda: ops.corr2d(randn(1, 3, 3), randn(2, 2)),
     r"^expected a 2-D input and a 2-D kernel, got shapes \(1, 3, 3\) and \(2, 2\)$"),
    (lambda: ops.corr2d(randn(3, 3), randn(1, 2, 2)),
     r"^expected a 2-D input and a 2-D kernel, got shapes \(3, 3\) and \(1, 2, 2\)$"),
    (lambda: ops.conv2d_output_size(0, 3), r"^input_size must be positive, got \(0, 0\)$"),
    (lambda: ops.conv2d_output_size(5, (3, 0)), r"^kernel_size must be positive, got \(3, 0\)$"),
    (lambda: ops.conv2d_output_size(5, 3, dilation=(0, 1)), r"^dilation must be positive, got \(0, 1\)$"),
    (lambda: ops.conv2d_output_size(5, 3, padding=(-1, 0)), r"^padding must be non-negative, got \(-1, 0\)$"),
    (lambda: ops.conv2d_output_size((1, 2, 3), 3), rf"^input_size {PAIR} \(1, 2, 3\)$"),
    (lambda: ops.conv2d_output_size(5, (3, 3, 3)), rf"^kernel_size {PAIR} \(3, 3, 3\)$"),
    (lambda: ops.conv2d_output_size(5, 3, stride=True), rf"^stride {PAIR} True$"),
    (lambda: ops.conv2d_output_size(5, 3, stride=1.5), rf"^stride {PAIR} 1\.5$"),
    (lambda: ops.conv2d_output_size(5, 3, padding=(1, 2, 3)), rf"^padding {PAIR} \(1, 2, 3\)$"),
    (lambda: ops.conv2d_output_size(5, 3, dilation=(1, 2, 3)), rf"^dilation {PAIR} \(1, 2, 3\)$"),
    (lambda: ops.conv2d_output_size((3, 4), (6, 3), padding=(1, 2)),
     r"^kernel_size \(6, 3\) \(extent 6 with dilation \(1, 1\)\) is larger than the padded input 5x8$"),
    (lambda: ops.conv2d_output_size((4, 3), (3, 6), padding=(2, 1)),
     r"^kernel_size \(3, 6\) \(extent 6 with dilation \(1, 1\)\) is larger than the padded\ input 8x5$"),
    (lambda: ops.pool2d_output_size(5, 3, padding=2),
     r"^padding \(2, 2\) must be at most half of kernel_size \(3, 3\)$"),
    (lambda: ops.pool2d_output_size(5, (2, 3), padding=(1, 2)),
     r"^padding \(1, 2\) must be at most half of kernel_size \(2, 3\)$"),
    (lambda: ops.pool2d_output_size(5, 2, stride=(1, 2, 3)), rf"^stride {PAIR} \(1, 2, 3\)$"),
    (lambda: ops.pool2d_output_size(5, (2, 2, 2)), rf"^kernel_size {PAIR} \(2, 2, 2\)$"),
    (lambda: ops.pool2d_output_size(5, 2, padding=(1, 1, 1)), rf"^padding {PAIR} \(1, 1, 1\)$"),
    (lambda: ops.batch_norm(randn(1, 3), None, None, training=True),
     r"^batch norm needs more than one value per channel in training, got input shape \(1, 3\)$"),
    (lambda: ops.batch_norm(randn(1, 3, 1, 1), None, None, training=True),
     r"^batch norm needs more than one value per channel in training, got input shape \(1, 3, 1, 1\)$"),
    (lambda: ops.batch_norm(randn(4, 3, 5), None, None, training=True),
     r"^input must be 2-D \(N, C\) or 4-D \(N, C, H, W\), got shape \(4, 3, 5\)$"),
    (lambda: ops.batch_norm(randn(4, 3), None, None), NO_STATS),
    (lambda: ops.batch_norm(randn(4, 3), randn(3), None), NO_STATS),
    (lambda: ops.batch_norm(randn(4, 3), None, randn(3)), NO_STATS),
]


@pytest.mark.parametrize("call, message", INVALID)
def test_invalid_arguments_raise_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# from scratch: no PyTorch convolution, unfold/fold or pooling kernel is dispatched


FORBIDDEN = ("convolution", "conv2d", "im2col", "col2im", "unfold", "max_pool", "avg_pool", "adaptive")


class _AtenOps(TorchDispatchMode):
    """Records the name of every aten operator dispatched while active, backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))


def _dispatched(fn, *shape: int) -> set[str]:
    x = randn(*shape).requires_grad_()
    with _AtenOps() as seen:
        fn(x).square().sum().backward()
    return seen.names


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: ops.conv2d(x, randn(4, 2, 3, 3).requires_grad_(), randn(4).requires_grad_(), 2, 1, (1, 2), 2),
        lambda x: ops.conv2d(x, randn(4, 4, 3, 3).requires_grad_(), padding="same", padding_mode="reflect"),
        lambda x: ops.max_pool2d(x, 3, 2, padding=1, ceil_mode=True),
        lambda x: ops.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False),
        ops.global_avg_pool2d,
    ],
    ids=["conv2d", "conv2d-reflect", "max_pool2d", "avg_pool2d", "global_avg_pool2d"],
)
def test_ops_are_built_from_scratch(fn):
    names = _dispatched(fn, 2, 4, 7, 6)
    assert names, "the dispatch mode recorded nothing"
    assert not [n for n in names if any(word in n for word in FORBIDDEN)]


def test_the_scratch_check_sees_torch_kernels():
    """The recorder above must be able to fail: PyTorch's own ops trip it."""
    names = _dispatched(lambda x: F.max_pool2d(F.conv2d(x, randn(3, 4, 3, 3)), 2), 2, 4, 7, 6)
    assert any("convolution" in n for n in names) and any("max_pool" in n for n in names)
