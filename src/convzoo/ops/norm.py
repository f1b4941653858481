"""Batch normalisation (the course's next chapter, used by BN-LeNet and ResNet-18)."""

from __future__ import annotations

import torch


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalise ``(N, C)`` or ``(N, C, H, W)`` per channel, as ``F.batch_norm``.

    In training the batch statistics are used (biased variance) and the running estimates move
    towards them by ``momentum`` (with the unbiased variance); in evaluation the running
    estimates are used.
    """
    if x.dim() not in (2, 4):
        raise ValueError(f"input must be 2-D (N, C) or 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    dims = (0,) if x.dim() == 2 else (0, 2, 3)
    shape = (1, -1) if x.dim() == 2 else (1, -1, 1, 1)
    if training:
        count = x.numel() // x.shape[1]
        if count <= 1:
            raise ValueError("batch norm needs more than one value per channel in training, "
                             f"got input shape {tuple(x.shape)}")
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.lerp_(mean.to(running_mean.dtype), momentum)
                running_var.lerp_((var * count / (count - 1)).to(running_var.dtype), momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("evaluation without running statistics needs training=True")
        mean, var = running_mean, running_var
    out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out
