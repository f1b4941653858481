"""Max and average pooling from windows, with PyTorch's semantics (padding, ceil_mode)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .shapes import IntOrPair, pair, pool2d_output_size
from .windows import im2col, torch_memory_format


def _pool_windows(
    x: torch.Tensor, kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair,
    dilation: IntOrPair, ceil_mode: bool, fill: float,
) -> torch.Tensor:
    """``(N, C, H, W) -> (C, kh * kw, N, H_out, W_out)``: the pooling windows, padded with ``fill``."""
    if x.dim() != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    kernel = pair(kernel_size, "kernel_size")
    stride_ = kernel if stride is None else pair(stride, "stride")
    pad, dil = pair(padding, "padding"), pair(dilation, "dilation")
    out = pool2d_output_size(tuple(x.shape[2:]), kernel, stride_, pad, dil, ceil_mode)
    # ceil_mode may let the last window run past the padded input: pad a little more there.
    need = [(out[a] - 1) * stride_[a] + dil[a] * (kernel[a] - 1) + 1 for a in range(2)]
    extra = [max(0, need[a] - x.shape[2 + a] - 2 * pad[a]) for a in range(2)]
    pads = (pad[1], pad[1] + extra[1], pad[0], pad[0] + extra[0])
    if any(pads):
        x = F.pad(x, pads, value=fill)
    cols = im2col(x, kernel, stride_, dil, out)
    return cols.reshape(x.shape[1], kernel[0] * kernel[1], x.shape[0], out[0], out[1])


def max_pool2d(
    x: torch.Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
    dilation: IntOrPair = 1, ceil_mode: bool = False,
) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C, H_out, W_out)``: the largest value of each window.

    Padding is ``-inf``, so it never wins. The gradient goes to the first maximum of a window in
    row-major order, as in ``F.max_pool2d``.
    """
    windows = _pool_windows(x, kernel_size, stride, padding, dilation, ceil_mode, float("-inf"))
    # The windows' (C, N, H_out, W_out) order, laid out as F.max_pool2d lays out its output.
    return windows.max(dim=1).values.transpose(0, 1).contiguous(memory_format=torch_memory_format(x))


def _window_lengths(size: int, out: int, kernel: int, stride: int, pad: int, include_pad: bool) -> torch.Tensor:
    start = torch.arange(out) * stride - pad
    end = torch.clamp(start + kernel, max=size + pad)
    if not include_pad:
        start, end = start.clamp(min=0), end.clamp(max=size)
    return end - start


def avg_pool2d(
    x: torch.Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: int | None = None,
) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C, H_out, W_out)``: the mean of each window.

    As in ``F.avg_pool2d``, zero padding counts towards the divisor by default
    (``count_include_pad``); a window that ``ceil_mode`` lets run past the padding never does.
    """
    sums = _pool_windows(x, kernel_size, stride, padding, 1, ceil_mode, 0.0).sum(dim=1).transpose(0, 1)
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError("divisor_override must be non-zero")
        return (sums / divisor_override).contiguous(memory_format=torch_memory_format(x))
    kernel = pair(kernel_size, "kernel_size")
    stride_ = kernel if stride is None else pair(stride, "stride")
    pad = pair(padding, "padding")
    rows, cols = (
        _window_lengths(x.shape[2 + a], sums.shape[2 + a], kernel[a], stride_[a], pad[a], count_include_pad)
        for a in range(2)
    )
    divisor = (rows[:, None] * cols[None, :]).to(device=sums.device, dtype=sums.dtype)
    return (sums / divisor).contiguous(memory_format=torch_memory_format(x))


def global_avg_pool2d(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W) -> (N, C, 1, 1)``: the mean of each feature map (NiN's and GoogLeNet's head)."""
    if x.dim() != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    return x.mean(dim=(2, 3), keepdim=True)


def pool2d(X: torch.Tensor, pool_size: IntOrPair, mode: str = "max") -> torch.Tensor:
    """The chapter's pooling of one 2-D array with a double loop, kept as a readable oracle."""
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D, got shape {tuple(X.shape)}")
    p_h, p_w = pair(pool_size, "pool_size")
    pool2d_output_size(tuple(X.shape), (p_h, p_w), 1)
    Y = torch.zeros(X.shape[0] - p_h + 1, X.shape[1] - p_w + 1, dtype=torch.promote_types(X.dtype, torch.float32))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            window = X[i : i + p_h, j : j + p_w].to(Y.dtype)
            Y[i, j] = window.max() if mode == "max" else window.mean()
    return Y
