"""Checkpoints: a snapshot is a copy of the live weights (reading them back is tested in test_reliability.py)."""

from __future__ import annotations

import torch

from convzoo.checkpoint import snapshot_state


def test_checkpoint_snapshot_is_a_copy_of_the_live_weights() -> None:
    from convzoo.models import create_model

    model = create_model("lenet")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    optimizer.step()
    tensors, metadata = snapshot_state(model, optimizer, epoch=1, history=[])
    saved = {k: v.clone() for k, v in tensors.items()}
    with torch.no_grad():  # training goes on while the snapshot is being written
        for p in model.parameters():
            p.add_(1)
    optimizer.step()
    assert all(torch.equal(tensors[k], saved[k]) for k in saved)
    assert metadata["epoch"] == "1" and any(k.startswith("optim.") for k in tensors)
