"""Convolution and pooling from scratch: pure, autograd-capable functions on tensors.

Nothing here calls PyTorch's convolution, unfold/fold or pooling operators: windows are a
strided view (``im2col``), convolution is a matrix product over them, pooling a reduction.
"""

from .conv import conv2d
from .corr import convolve2d, corr2d, corr2d_loop, corr2d_multi_in, corr2d_multi_in_out
from .norm import batch_norm
from .pool import avg_pool2d, global_avg_pool2d, max_pool2d, pool2d
from .shapes import conv2d_output_size, pool2d_output_size
from .windows import col2im, im2col

__all__ = [
    "avg_pool2d",
    "batch_norm",
    "col2im",
    "conv2d",
    "conv2d_output_size",
    "convolve2d",
    "corr2d",
    "corr2d_loop",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "global_avg_pool2d",
    "im2col",
    "max_pool2d",
    "pool2d",
    "pool2d_output_size",
]
