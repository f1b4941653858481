"""2-D convolution (cross-correlation, as in deep learning) from windows and one matrix product."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .shapes import IntOrPair, conv2d_output_size, pair, same_padding
from .windows import im2col


def _check_conv_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D (C_out, C_in / groups, kh, kw), got shape {tuple(weight.shape)}")
    if not isinstance(groups, int) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    c_out, c_per_group = weight.shape[:2]
    if x.shape[1] % groups:
        raise ValueError(f"in_channels {x.shape[1]} is not divisible by groups {groups}")
    if c_out % groups:
        raise ValueError(f"out_channels {c_out} is not divisible by groups {groups}")
    if x.shape[1] != c_per_group * groups:
        raise ValueError(
            f"input has {x.shape[1]} channels but weight expects {c_per_group * groups} "
            f"({c_per_group} per group x {groups} groups)"
        )
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``, the semantics of ``F.conv2d``.

    ``weight`` is ``(C_out, C_in / groups, kh, kw)``. Each output pixel is the dot product of a
    window with a kernel: the windows are copied into columns (``im2col``) and multiplied by
    the flattened kernels in one batched matrix product per group. ``padding`` is an int, a
    pair, ``'valid'`` or ``'same'``; ``padding_mode`` is one of ``zeros``, ``reflect``,
    ``replicate``, ``circular`` as in ``torch.nn.Conv2d``.
    """
    _check_conv_args(x, weight, bias, groups)
    kernel, stride_, dilation_ = pair(tuple(weight.shape[2:]), "kernel_size"), pair(stride, "stride"), pair(dilation, "dilation")
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        if stride_ != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride {stride_}")
        pads = same_padding(kernel, dilation_)
    elif isinstance(padding, str):
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        ph, pw = pair(padding, "padding")
        if min(ph, pw) < 0:
            raise ValueError(f"padding must be non-negative, got {(ph, pw)}")
        pads = (pw, pw, ph, ph)
    if any(pads):
        mode = "constant" if padding_mode == "zeros" else padding_mode
        x = F.pad(x, pads, mode=mode)
    out_h, out_w = conv2d_output_size(tuple(x.shape[2:]), kernel, stride_, 0, dilation_)

    n, c_out = x.shape[0], weight.shape[0]
    cols = im2col(x, kernel, stride_, dilation_, (out_h, out_w))  # C x kh x kw x N x H_out x W_out
    cols = cols.reshape(groups, -1, n * out_h * out_w)  # G x (C/G * kh * kw) x (N * H_out * W_out)
    kernels = weight.reshape(groups, c_out // groups, -1)  # G x C_out/G x (C/G * kh * kw)
    # One plain matrix product when there is one group: MKL's mm beats a batch of one.
    out = kernels[0] @ cols[0] if groups == 1 else torch.matmul(kernels, cols)
    out = out.reshape(c_out, n, out_h, out_w)  # C_out x N x H_out x W_out
    out = out.transpose(0, 1).contiguous()  # N x C_out x H_out x W_out
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
