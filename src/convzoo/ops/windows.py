"""Sliding windows as a strided view (im2col) and their inverse (col2im), with autograd.

Every convolution and pooling op in convzoo is built on these two functions:

* ``im2col`` copies each window of a padded ``(N, C, H, W)`` input into the column matrix
  ``(C, kh, kw, N, H_out, W_out)``: element ``[c, i, j, n, y, x]`` is
  ``input[n, c, y * sh + i * dh, x * sw + j * dw]``. Rows are window offsets ``(c, i, j)`` and
  columns output positions ``(n, y, x)``, so a convolution is one matrix product
  ``(C_out, C * kh * kw) @ (C * kh * kw, N * H_out * W_out)`` with the batch folded into it.
  The copy reads one strided view: a single memory pass, no Python loop over positions.
* ``col2im`` is its adjoint: it adds every window element back to the input position it came
  from. Overlapping windows (stride < kernel) accumulate; that is the gradient of ``im2col``.

Each is the other's backward, so gradients of any order flow through them.
"""

from __future__ import annotations

import torch

Pair = tuple[int, int]


def _window_view(x: torch.Tensor, kernel: Pair, stride: Pair, dilation: Pair, out: Pair) -> torch.Tensor:
    """A view of ``x`` with the column matrix's shape ``(C, kh, kw, N, H_out, W_out)``."""
    n, c = x.shape[:2]
    sn, sc, sh, sw = x.stride()
    return x.as_strided(
        (c, kernel[0], kernel[1], n, out[0], out[1]),
        (sc, sh * dilation[0], sw * dilation[1], sn, sh * stride[0], sw * stride[1]),
        x.storage_offset(),
    )


class _Im2Col(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, dilation, out):  # type: ignore[override]
        ctx.geometry = (x.shape[2:], kernel, stride, dilation)
        return _window_view(x, kernel, stride, dilation, out).contiguous()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        size, kernel, stride, dilation = ctx.geometry
        return col2im(grad, size, kernel, stride, dilation), None, None, None, None


class _Col2Im(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cols, size, kernel, stride, dilation):  # type: ignore[override]
        ctx.geometry = (kernel, stride, dilation, cols.shape[4:])
        c, kh, kw, n, ho, wo = cols.shape
        # Accumulate in (C, N, H, W) memory order, the order of the columns, and return that
        # buffer as an (N, C, H, W) view: no transposing copy on either side.
        x = cols.new_zeros(c, n, size[0], size[1]).transpose(0, 1)
        if dilation == (1, 1) and stride[0] >= kh and stride[1] >= kw:
            # Windows do not overlap: every input position receives at most one value.
            _window_view(x, kernel, stride, dilation, (ho, wo)).copy_(cols)
            return x
        for i in range(kh):
            for j in range(kw):
                top, left = i * dilation[0], j * dilation[1]
                x[:, :, top : top + stride[0] * (ho - 1) + 1 : stride[0],
                  left : left + stride[1] * (wo - 1) + 1 : stride[1]] += cols[:, i, j].transpose(0, 1)
        return x

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        kernel, stride, dilation, out = ctx.geometry
        return im2col(grad, kernel, stride, dilation, tuple(out)), None, None, None, None


def im2col(x: torch.Tensor, kernel: Pair, stride: Pair, dilation: Pair, out: Pair) -> torch.Tensor:
    """``(N, C, H, W) -> (C, kh, kw, N, H_out, W_out)``: every window, copied out of a view.

    ``x`` is already padded; ``out`` is the output size from ``conv2d_output_size``.
    """
    return _Im2Col.apply(x, kernel, stride, dilation, out)


def col2im(cols: torch.Tensor, size: Pair, kernel: Pair, stride: Pair, dilation: Pair) -> torch.Tensor:
    """``(C, kh, kw, N, H_out, W_out) -> (N, C, H, W)``: the adjoint of ``im2col`` (sums overlaps).

    The result is laid out in memory as ``(C, N, H, W)``, the order of the columns."""
    return _Col2Im.apply(cols, tuple(size), kernel, stride, dilation)


def torch_memory_format(*inputs: torch.Tensor) -> torch.memory_format:
    """The memory format PyTorch's convolution and pooling give an output of these inputs: channels-last
    when one of them is channels-last (and not also plain NCHW, as a one-channel tensor can be), else NCHW."""
    for t in inputs:
        if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
            return torch.channels_last
    return torch.contiguous_format
