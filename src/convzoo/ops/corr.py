"""The chapter's 2-D cross-correlation, its multi-channel forms, and true convolution."""

from __future__ import annotations

import torch

from .conv import conv2d
from .shapes import conv2d_output_size


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The chapter's code returns floats for integer inputs: promote to at least the default float type."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _check_dims(X: torch.Tensor, K: torch.Tensor, x_dim: int, k_dim: int) -> None:
    if X.dim() != x_dim or K.dim() != k_dim:
        raise ValueError(f"expected a {x_dim}-D input and a {k_dim}-D kernel, "
                         f"got shapes {tuple(X.shape)} and {tuple(K.shape)}")


def corr2d_loop(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(H, W), (h, w) -> (H - h + 1, W - w + 1)`` with the chapter's double loop: the oracle."""
    _check_dims(X, K, 2, 2)
    h, w = K.shape
    out_h, out_w = conv2d_output_size(tuple(X.shape), (h, w))
    dtype = _float_dtype(X, K)
    Y = torch.zeros(out_h, out_w, dtype=dtype)
    for i in range(out_h):
        for j in range(out_w):
            Y[i, j] = (X[i : i + h, j : j + w].to(dtype) * K.to(dtype)).sum()
    return Y


def corr2d_multi_in_out(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(C_in, H, W), (C_out, C_in, h, w) -> (C_out, H', W')``: one output map per kernel stack."""
    _check_dims(X, K, 3, 4)
    dtype = _float_dtype(X, K)
    return conv2d(X.to(dtype)[None], K.to(dtype))[0]


def corr2d_multi_in(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(C_in, H, W), (C_in, h, w) -> (H', W')``: correlate channel by channel, then sum."""
    _check_dims(X, K, 3, 3)
    return corr2d_multi_in_out(X, K[None])[0]


def corr2d(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``(H, W), (h, w) -> (H - h + 1, W - w + 1)``: the chapter's ``corr2d``, vectorised.

    >>> corr2d(torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]), torch.tensor([[0, 1], [2, 3]]))
    tensor([[19., 25.],
            [37., 43.]])
    """
    _check_dims(X, K, 2, 2)
    return corr2d_multi_in(X[None], K[None])


def convolve2d(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """True 2-D convolution: cross-correlation with the kernel flipped in both axes.

    Learned kernels make the two interchangeable, which is why deep learning calls
    cross-correlation "convolution".
    """
    _check_dims(X, K, 2, 2)
    return corr2d(X, K.flip(0, 1))
