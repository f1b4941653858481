"""2-D convolution (cross-correlation, as in deep learning) from windows and one matrix product."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .shapes import IntOrPair, Pair, conv2d_output_size, pair, same_padding
from .windows import im2col, torch_memory_format


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
    algorithm: str = "auto",
) -> torch.Tensor:
    """``(N, C_in, H, W) -> (N, C_out, H_out, W_out)``, the semantics of ``F.conv2d``.

    ``weight`` is ``(C_out, C_in / groups, kh, kw)``; ``padding`` is an int, a pair, ``'valid'``
    or ``'same'``; ``padding_mode`` one of ``zeros``, ``reflect``, ``replicate``, ``circular``
    as in ``torch.nn.Conv2d``. Two algorithms compute the same thing:

    * ``im2col``: every window is copied into a column and all of them are multiplied by the
      flattened kernels in one matrix product (per group);
    * ``fft``: the convolution theorem: cross-correlation is a product in the frequency domain,
      ``Y = X * conj(K)`` at each frequency, summed over input channels (a small matrix product
      per frequency), so a k x k kernel costs the same as a 1x1 one.

    ``auto`` takes the FFT for kernels of 5x5 and more at stride 1 when the batch is large
    next to the channel counts, im2col otherwise. The output has ``F.conv2d``'s memory format:
    contiguous NCHW, or channels-last when the input or the weight is.
    """
    out = _conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm)
    return out.contiguous(memory_format=torch_memory_format(x, weight))


def _conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: IntOrPair, padding: IntOrPair | str,
    dilation: IntOrPair, groups: int, padding_mode: str, algorithm: str,
) -> torch.Tensor:
    """``conv2d`` with its output in the order the algorithm leaves it: ``(C_out, N, H_out, W_out)`` for im2col."""
    _check_conv_args(x, weight, bias, groups)
    kernel = pair(tuple(weight.shape[2:]), "kernel_size")
    stride_, dilation_ = pair(stride, "stride"), pair(dilation, "dilation")
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

    if algorithm == "auto":
        # The FFT pays off for kernels of 5x5 and more at stride 1, as long as the spectra of
        # the kernels (C_out x C_in/G of them) are fewer than those of the data (N x (C_in + C_out)):
        # LeNet's layers at batch 256, not AlexNet's 256 x 96 kernels at batch 16.
        n, c_in, c_out = x.shape[0], x.shape[1], weight.shape[0]
        fits = kernel[0] * kernel[1] >= 25 and stride_ == (1, 1) and dilation_ == (1, 1)
        algorithm = "fft" if fits and n * (c_in + c_out) >= c_out * c_in // groups else "im2col"
    if algorithm == "im2col":
        out = _conv_im2col(x, weight, kernel, stride_, dilation_, groups, (out_h, out_w))
    elif algorithm == "fft":
        out = _conv_fft(x, weight, kernel, stride_, dilation_, groups, (out_h, out_w))
    else:
        raise ValueError(f"algorithm must be 'auto', 'im2col' or 'fft', got {algorithm!r}")
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _conv_im2col(
    x: torch.Tensor, weight: torch.Tensor, kernel: Pair, stride: Pair, dilation: Pair, groups: int, out: Pair
) -> torch.Tensor:
    n, c_out = x.shape[0], weight.shape[0]
    cols = im2col(x, kernel, stride, dilation, out)  # C x kh x kw x N x H_out x W_out
    if groups == 1:  # one plain matrix product: MKL's mm beats a batch of one
        y = weight.reshape(c_out, -1) @ cols.reshape(-1, n * out[0] * out[1])  # C_out x (N * H_out * W_out)
    else:
        cols = cols.reshape(groups, -1, n * out[0] * out[1])  # G x (C/G * kh * kw) x (N * H_out * W_out)
        y = torch.matmul(weight.reshape(groups, c_out // groups, -1), cols)  # G x C_out/G x (N * H_out * W_out)
    # N x C_out x H_out x W_out, kept in the product's (C_out, N, H, W) memory order: the next
    # im2col reads any strides, and the backward pass gets its gradient in the same order.
    return y.reshape(c_out, n, out[0], out[1]).transpose(0, 1)


def _conv_fft(
    x: torch.Tensor, weight: torch.Tensor, kernel: Pair, stride: Pair, dilation: Pair, groups: int, out: Pair
) -> torch.Tensor:
    n, c, h, w = x.shape
    c_out = weight.shape[0]
    if dilation != (1, 1):  # a dilated kernel is a larger kernel with zeros between its taps
        dilated = weight.new_zeros(*weight.shape[:2], dilation[0] * (kernel[0] - 1) + 1,
                                   dilation[1] * (kernel[1] - 1) + 1)
        dilated[:, :, :: dilation[0], :: dilation[1]] = weight
        weight = dilated
    # Circular correlation over the padded input equals the linear one wherever the kernel fits
    # (output rows 0 .. H - kh), the only rows kept.
    xf = torch.fft.rfft2(x)  # N x C x H x F_w (complex)
    kf = torch.fft.rfft2(weight, s=(h, w)).conj()  # C_out x C/G x H x F_w
    freqs = xf.shape[2] * xf.shape[3]
    xf = xf.reshape(n, groups, c // groups, freqs).permute(1, 3, 0, 2)  # G x F x N x C/G
    kf = kf.reshape(groups, c_out // groups, c // groups, freqs).permute(0, 3, 2, 1)  # G x F x C/G x C_out/G
    yf = _complex_matmul(xf, kf)  # G x F x N x C_out/G
    yf = yf.permute(2, 0, 3, 1).reshape(n, c_out, h, -1)  # N x C_out x H x F_w
    y = torch.fft.irfft2(yf, s=(h, w))  # N x C_out x H x W
    rows = stride[0] * (out[0] - 1) + 1
    cols = stride[1] * (out[1] - 1) + 1
    return y[:, :, :rows : stride[0], :cols : stride[1]]


def _complex_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for complex batches as one real product (PyTorch's complex bmm loops on the CPU).

    ``(ar + i ai)(br + i bi) = (ar br - ai bi) + i (ar bi + ai br)``, i.e.
    ``[ar, ai] @ [[br, bi], [-bi, br]] = [real, imag]``.
    """
    ar, ai = a.real, a.imag
    br, bi = b.real, b.imag
    left = torch.cat((ar, ai), dim=-1)  # ... x M x 2K
    right = torch.cat((torch.cat((br, bi), dim=-1), torch.cat((-bi, br), dim=-1)), dim=-2)  # ... x 2K x 2N
    out = left @ right  # ... x M x 2N
    half = b.shape[-1]
    return torch.complex(out[..., :half], out[..., half:])
