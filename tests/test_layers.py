"""``convzoo.layers`` are drop-ins for ``torch.nn``: same arguments, state_dict keys and numbers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

from convzoo import layers, ops

# (convzoo layer, its torch.nn twin, constructor arguments, input shape)
DROP_INS = [
    (layers.Conv2d, nn.Conv2d, {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}, (2, 3, 6, 5)),
    (layers.Conv2d, nn.Conv2d, {"in_channels": 4, "out_channels": 6, "kernel_size": (3, 2), "stride": 2, "groups": 2,
                                "bias": False, "padding_mode": "reflect", "padding": (1, 1)}, (2, 4, 7, 6)),
    (layers.Conv2d, nn.Conv2d, {"in_channels": 2, "out_channels": 3, "kernel_size": 4, "padding": "same",
                                "dilation": 2, "padding_mode": "circular"}, (1, 2, 9, 8)),
    (layers.MaxPool2d, nn.MaxPool2d, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (2, 3, 8, 7)),
    (layers.MaxPool2d, nn.MaxPool2d, {"kernel_size": 2, "dilation": 2}, (2, 3, 8, 7)),
    (layers.AvgPool2d, nn.AvgPool2d, {"kernel_size": 2}, (2, 3, 8, 7)),
    (layers.AvgPool2d, nn.AvgPool2d, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                      "count_include_pad": False}, (2, 3, 8, 7)),
    (layers.AvgPool2d, nn.AvgPool2d, {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 3, 8, 7)),  # pad counted
    (layers.AvgPool2d, nn.AvgPool2d, {"kernel_size": 2, "divisor_override": 3}, (2, 3, 8, 7)),
    (layers.BatchNorm1d, nn.BatchNorm1d, {"num_features": 3}, (5, 3)),
    (layers.BatchNorm2d, nn.BatchNorm2d, {"num_features": 3, "momentum": None}, (4, 3, 2, 5)),
    (layers.BatchNorm2d, nn.BatchNorm2d, {"num_features": 3, "affine": False}, (4, 3, 2, 5)),
    (layers.BatchNorm2d, nn.BatchNorm2d, {"num_features": 3, "track_running_stats": False}, (4, 3, 2, 5)),
    (layers.BatchNorm2d, nn.BatchNorm2d, {"num_features": 3, "eps": 0.5, "momentum": 0.0}, (4, 3, 2, 5)),
]


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def as_function(module: nn.Module):
    """``module`` as a function of its input and its parameters, so gradients reach both."""
    names = [name for name, _ in module.named_parameters()]
    return lambda x, *params: functional_call(module, dict(zip(names, params, strict=True)), (x,))


def twins(ours_cls, theirs_cls, kwargs) -> tuple[nn.Module, nn.Module]:
    """The two layers with identical float64 state: ours loads the twin's state dict."""
    theirs = theirs_cls(**kwargs).double()
    with torch.no_grad():  # make the buffers worth comparing (fresh ones are zeros and ones)
        for name, buffer in theirs.named_buffers():
            if name in ("running_mean", "running_var"):
                buffer.copy_(randn(*buffer.shape, seed=len(name)).exp())
    ours = ours_cls(**kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def case_id(case) -> str:
    return f"{case[0].__name__}({', '.join(f'{k}={v!r}' for k, v in case[2].items())})"


@pytest.mark.parametrize("case", DROP_INS, ids=[case_id(c) for c in DROP_INS])
def test_drop_in_has_torch_state_dict_and_repr(case):
    ours_cls, theirs_cls, kwargs, _ = case
    ours, theirs = ours_cls(**kwargs), theirs_cls(**kwargs)
    assert isinstance(ours, theirs_cls)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("case", DROP_INS, ids=[case_id(c) for c in DROP_INS])
@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
def test_state_dict_moves_between_twins_and_gives_the_same_numbers(assert_matches_torch, case, direction):
    ours_cls, theirs_cls, kwargs, shape = case
    ours, theirs = twins(ours_cls, theirs_cls, kwargs)
    if direction == "ours->torch":
        theirs = theirs_cls(**kwargs).double()
        theirs.load_state_dict(ours.state_dict())
    params = [p for _, p in theirs.named_parameters()]
    for _ in range(3):  # in training, batch norm's running estimates must move alike
        assert_matches_torch(as_function(ours), as_function(theirs), randn(*shape, seed=_), *params)
    for (name, ours_state), theirs_state in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(ours_state, theirs_state, rtol=1e-10, atol=1e-10, msg=name)
    ours.eval(), theirs.eval()
    assert_matches_torch(as_function(ours), as_function(theirs), randn(*shape, seed=3), *params)


@st.composite
def padded_conv_configs(draw: st.DrawFn) -> dict:
    """Configurations of ``nn.Conv2d`` valid for every padding mode (reflect: padding < size)."""
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)), st.just("same"),
                             st.just("valid")))
    if padding == "same":  # PyTorch puts the odd pixel of the total on the far side
        pad_small = tuple(d[a] * (k[a] - 1) // 2 for a in range(2))
        pad_big = tuple(d[a] * (k[a] - 1) - pad_small[a] for a in range(2))
    else:
        pad_small = pad_big = (0, 0) if padding == "valid" else (padding,) * 2 if isinstance(padding, int) else padding
    size = tuple(
        draw(st.integers(max(1, d[a] * (k[a] - 1) + 1 - 2 * pad_small[a], pad_big[a] + 1), 12)) for a in range(2)
    )
    groups = draw(st.integers(1, 2))
    kwargs = {
        "in_channels": groups * draw(st.integers(1, 3)), "out_channels": groups * draw(st.integers(1, 3)),
        "kernel_size": k, "stride": 1 if padding == "same" else draw(st.integers(1, 3)), "padding": padding,
        "dilation": d, "groups": groups, "bias": draw(st.booleans()),
        "padding_mode": draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
    }
    return {"kwargs": kwargs, "shape": (draw(st.integers(1, 2)), kwargs["in_channels"], *size)}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@settings(max_examples=150, deadline=None)
@given(padded_conv_configs(), st.integers(0, 2**16))
def test_conv2d_layer_matches_torch_in_every_padding_mode(assert_matches_torch, cfg, seed):
    torch.manual_seed(seed)
    ours, theirs = twins(layers.Conv2d, nn.Conv2d, cfg["kwargs"])
    params = [p for _, p in theirs.named_parameters()]
    assert_matches_torch(as_function(ours), as_function(theirs), randn(*cfg["shape"], seed=seed), *params)


def test_seed_quiz_parameter_count_and_output_shape():
    assert sum(p.numel() for p in layers.Conv2d(3, 10, kernel_size=3).parameters()) == 280  # 10 * 3 * 3 * 3 + 10
    assert layers.Conv2d(3, 4, kernel_size=3, padding=2)(torch.zeros(1, 3, 100, 100)).shape == (1, 4, 102, 102)


def test_seed_example_asymmetric_kernel_and_padding():
    conv = layers.Conv2d(2, 3, kernel_size=(3, 5), padding=(1, 2))
    assert conv(torch.zeros(4, 2, 3, 5)).shape == (4, 3, 3, 5)
    assert ops.conv2d_output_size((3, 5), (3, 5), padding=(1, 2)) == (3, 5)


def test_global_avg_pool2d_layer():
    x = randn(2, 3, 4, 5)
    torch.testing.assert_close(layers.GlobalAvgPool2d()(x), nn.AdaptiveAvgPool2d(1)(x), rtol=1e-12, atol=1e-12)


def test_seed_conv2d_layer():
    conv = layers.Conv2D((1, 2))
    assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]
    assert conv.weight.shape == (1, 2) and conv.bias.shape == (1,)
    assert conv(torch.zeros(6, 8)).shape == (6, 7)


@pytest.mark.parametrize("cls, shape", [(layers.BatchNorm1d, (5, 3)), (layers.BatchNorm2d, (4, 3, 2, 5))])
def test_batch_norm_with_tracking_switched_off_later_leaves_running_stats_alone_in_training(
    assert_matches_torch, cls, shape
):
    """As in torch.nn: the buffers stay, training uses and updates nothing, evaluation still reads them."""
    ours, theirs = twins(cls, getattr(nn, cls.__name__), {"num_features": 3})
    ours.track_running_stats = theirs.track_running_stats = False
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    params = [p for _, p in theirs.named_parameters()]
    assert_matches_torch(as_function(ours), as_function(theirs), randn(*shape), *params)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, before[name]), name
        assert torch.equal(value, theirs.state_dict()[name]), name
    ours.eval(), theirs.eval()
    assert_matches_torch(as_function(ours), as_function(theirs), randn(*shape, seed=1), *params)


def test_seed_conv2d_layer_adds_its_bias():
    X = randn(6, 8)
    conv = layers.Conv2D((2, 3)).double()
    with torch.no_grad():
        conv.bias.fill_(0.5)
    torch.testing.assert_close(conv(X), ops.corr2d(X, conv.weight) + 0.5, rtol=1e-12, atol=1e-12)


def test_max_pool2d_refuses_return_indices():
    message = r"^convzoo's MaxPool2d does not return indices; use torch.nn.MaxPool2d for that$"
    with pytest.raises(ValueError, match=message):
        layers.MaxPool2d(2, return_indices=True)(torch.zeros(1, 1, 4, 4))


def test_layers_for_names_the_backends():
    assert layers.layers_for("torch") is layers.BACKENDS["torch"]
    assert layers.layers_for("scratch").Conv2d is layers.Conv2d
    with pytest.raises(ValueError, match=r"^backend must be one of \['scratch', 'torch'\], got 'tf'$"):
        layers.layers_for("tf")
