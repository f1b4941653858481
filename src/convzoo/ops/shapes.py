"""Output-shape formulas for convolution and pooling, with argument checking.

For one spatial dimension of size ``n``, kernel ``k``, padding ``p`` (each side), stride ``s``
and dilation ``d`` the output size is

    floor((n + 2p - d(k - 1) - 1) / s) + 1

the chapter's formula ``floor((n - k + p_total + s) / s)`` with the kernel's extent ``d(k - 1) + 1``
in place of ``k``. Every function here raises ``ValueError`` naming the argument and its value
when the arguments cannot describe a valid layer.
"""

from __future__ import annotations

from collections.abc import Sequence

Pair = tuple[int, int]
IntOrPair = int | Sequence[int]


def pair(value: IntOrPair, name: str) -> Pair:
    """``3 -> (3, 3)``, ``(3, 5) -> (3, 5)``; anything else is a ``ValueError`` naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (items[0], items[1])


def _check_positive(value: Pair, name: str) -> None:
    if min(value) <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _output_dim(n: int, k: int, p: int, s: int, d: int, ceil_mode: bool = False) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -(-span // s) + 1
        # PyTorch's rule: the last window must start inside the input or its left padding.
        if (out - 1) * s >= n + p:
            out -= 1
        return out
    return span // s + 1


def conv2d_output_size(
    input_size: IntOrPair,
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> Pair:
    """``(H_out, W_out)`` of a convolution over an ``(H, W)`` input.

    >>> conv2d_output_size(100, 3, padding=2)
    (102, 102)
    """
    size, kernel = pair(input_size, "input_size"), pair(kernel_size, "kernel_size")
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    _check_positive(size, "input_size")
    _check_positive(kernel, "kernel_size")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    if min(padding) < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    for axis in range(2):
        extent = dilation[axis] * (kernel[axis] - 1) + 1
        padded = size[axis] + 2 * padding[axis]
        if extent > padded:
            raise ValueError(
                f"kernel_size {kernel} (extent {extent} with dilation {dilation}) is larger than "
                f"the padded input {size[0] + 2 * padding[0]}x{size[1] + 2 * padding[1]}"
            )
    return (
        _output_dim(size[0], kernel[0], padding[0], stride[0], dilation[0]),
        _output_dim(size[1], kernel[1], padding[1], stride[1], dilation[1]),
    )


def pool2d_output_size(
    input_size: IntOrPair,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
) -> Pair:
    """``(H_out, W_out)`` of a pooling window over an ``(H, W)`` input.

    ``stride`` defaults to ``kernel_size``; as in PyTorch, padding may be at most half the kernel.
    """
    kernel = pair(kernel_size, "kernel_size")
    stride_pair = kernel if stride is None else pair(stride, "stride")
    padding_pair = pair(padding, "padding")
    if any(p > k // 2 for p, k in zip(padding_pair, kernel)):
        raise ValueError(f"padding {padding_pair} must be at most half of kernel_size {kernel}")
    out = conv2d_output_size(input_size, kernel, stride_pair, padding_pair, dilation)
    if not ceil_mode:
        return out
    size, dil = pair(input_size, "input_size"), pair(dilation, "dilation")
    return tuple(  # type: ignore[return-value]
        _output_dim(size[a], kernel[a], padding_pair[a], stride_pair[a], dil[a], ceil_mode=True)
        for a in range(2)
    )


def same_padding(kernel_size: IntOrPair, dilation: IntOrPair = 1) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding that keeps the size at stride 1 (PyTorch's 'same')."""
    kernel, dil = pair(kernel_size, "kernel_size"), pair(dilation, "dilation")
    total_h, total_w = (dil[0] * (kernel[0] - 1), dil[1] * (kernel[1] - 1))
    return (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2)

