"""The model zoo: parameter counts by hand, the chapter's printed shapes, gradients, backends, registry,
and every block and network against the book's definition written as a function of its weights.

Every per-model test runs over ``list_models()`` and reads what it needs from the registry or the
model itself: the native size from the spec, the smallest input from the shape formulas, whether
a model is stochastic from its modules. The one hand-kept table is ``HAND_COUNTS`` (the book's
input size and parameter count of each network): a new model is its file plus one entry there.

The 224x224 networks are expensive on a CPU, so most checks run them at reduced input sizes
(the classifier is sized from the shape formula), on the ``meta`` device where only shapes
matter, or once at the native size where the chapter printed shapes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from convzoo import layers
from convzoo.errors import UserError
from convzoo.models import (
    Inception,
    InputSizeError,
    Residual,
    UnknownModelError,
    check_input_size,
    create_model,
    feature_size,
    get_model_spec,
    list_models,
    nin_block,
    rebuild,
    register_model,
    registry,
    resnet_block,
    vgg,
    vgg_block,
)
from convzoo.ops import conv2d_output_size
from convzoo.summary import summarize, summarize_model

pytestmark = pytest.mark.usefixtures("one_thread")


# --- parameter counts by hand ---------------------------------------------------------------

def conv(c_in: int, c_out: int, k: int) -> int:
    return c_out * (c_in * k * k + 1)


def linear(n_in: int, n_out: int) -> int:
    return n_out * (n_in + 1)


def bn(c: int) -> int:
    return 2 * c  # weight and bias; the running statistics are buffers


def lenet_params(c: int, k: int) -> int:
    return conv(c, 6, 5) + conv(6, 16, 5) + linear(16 * 5 * 5, 120) + linear(120, 84) + linear(84, k)


def lenet_bn_params(c: int, k: int) -> int:  # no padding: 28 -> 24 -> 12 -> 8 -> 4
    return (conv(c, 6, 5) + bn(6) + conv(6, 16, 5) + bn(16)
            + linear(16 * 4 * 4, 120) + bn(120) + linear(120, 84) + bn(84) + linear(84, k))


def lenet_modern_params(c: int, k: int) -> int:  # 28 -> 28 -> 14 -> 10 -> 5
    return conv(c, 16, 5) + bn(16) + conv(16, 32, 5) + bn(32) + linear(32 * 5 * 5, 128) + bn(128) + linear(128, k)


def alexnet_params(c: int, k: int) -> int:
    return (conv(c, 96, 11) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
            + linear(256 * 5 * 5, 4096) + linear(4096, 4096) + linear(4096, k))


def vgg_params(arch: tuple[tuple[int, int], ...], c: int, k: int, side: int = 7, hidden: int = 4096) -> int:
    total = 0
    for num_convs, out in arch:
        for _ in range(num_convs):
            total += conv(c, out, 3)
            c = out
    return total + linear(c * side * side, hidden) + linear(hidden, hidden) + linear(hidden, k)


VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG11_SMALL = ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))


def nin_params(c: int, k: int) -> int:
    def block(c_in: int, c_out: int, ks: int) -> int:
        return conv(c_in, c_out, ks) + 2 * conv(c_out, c_out, 1)

    return block(c, 96, 11) + block(96, 256, 5) + block(256, 384, 3) + block(384, k, 3)


# (in, c1, c2, c3, c4) of the nine Inception blocks
INCEPTIONS = [
    (192, 64, (96, 128), (16, 32), 32), (256, 128, (128, 192), (32, 96), 64),
    (480, 192, (96, 208), (16, 48), 64), (512, 160, (112, 224), (24, 64), 64),
    (512, 128, (128, 256), (24, 64), 64), (512, 112, (144, 288), (32, 64), 64),
    (528, 256, (160, 320), (32, 128), 128),
    (832, 256, (160, 320), (32, 128), 128), (832, 384, (192, 384), (48, 128), 128),
]


def inception_params(c_in: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> int:
    return (conv(c_in, c1, 1) + conv(c_in, c2[0], 1) + conv(c2[0], c2[1], 3)
            + conv(c_in, c3[0], 1) + conv(c3[0], c3[1], 5) + conv(c_in, c4, 1))


def googlenet_params(c: int, k: int) -> int:
    return (conv(c, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
            + sum(inception_params(*args) for args in INCEPTIONS) + linear(1024, k))


def resnet18_params(c: int, k: int) -> int:
    def residual(c_in: int, c_out: int, projection: bool) -> int:
        shortcut = conv(c_in, c_out, 1) if projection else 0
        return conv(c_in, c_out, 3) + conv(c_out, c_out, 3) + 2 * bn(c_out) + shortcut

    total = conv(c, 64, 7) + bn(64) + 2 * residual(64, 64, False)
    for c_in, c_out in [(64, 128), (128, 256), (256, 512)]:
        total += residual(c_in, c_out, True) + residual(c_out, c_out, False)
    return total + linear(512, k)


class HandCount(NamedTuple):
    size: int  # the side of the square input the book trains the network at (the registry's input_size)
    params: int  # parameters at that size for one channel and ten classes, by hand from the book's layers
    formula: Callable[[int, int], int]  # the same count layer by layer, of (in_channels, num_classes)


# The one hand-kept table: a network added to the registry fails test_parameter_count_matches_the_hand_count
# until it has its entry here. Each count is its formula at one channel and ten classes, checked once by hand.
HAND_COUNTS = {
    # 5x5 convs 1->6 (padded) and 6->16, then 16*5*5 = 400 -> 120 -> 84 -> 10:
    # (6*25+6) + (16*6*25+16) + (400*120+120) + (120*84+84) + (84*10+10)
    "lenet": HandCount(28, 61_706, lenet_params),
    # as lenet without padding (16*4*4 = 256 features) plus batch norm on 6, 16, 120 and 84 channels
    "lenet_bn": HandCount(28, 44_878, lenet_bn_params),
    # 5x5 convs 1->16 (padded) and 16->32, 32*5*5 = 800 -> 128 -> 10, batch norm on 16, 32 and 128
    "lenet_modern": HandCount(28, 117_418, lenet_modern_params),
    # 11x11 conv 96, 5x5 conv 256, three 3x3 convs 384, 384, 256; 256*5*5 = 6400 -> 4096 -> 4096 -> 10
    "alexnet": HandCount(224, 46_764_746, alexnet_params),
    # VGG-11: 3x3 convs 64, 128, 256x2, 512x2, 512x2; 512*7*7 = 25088 -> 4096 -> 4096 -> 10
    "vgg11": HandCount(224, 128_806_154, lambda c, k: vgg_params(VGG11, c, k)),
    # VGG-11 at a quarter of the channels, the same 4096-wide classifier on 128*7*7 = 6272 features
    "vgg11_small": HandCount(224, 43_093_322, lambda c, k: vgg_params(VGG11_SMALL, c, k)),
    # four NiN blocks (a conv and two 1x1 convs each): 96 11x11, 256 5x5, 384 3x3, one map per class 3x3
    "nin": HandCount(224, 1_992_166, nin_params),
    # stem 7x7 64, 1x1 64, 3x3 192; the nine Inception blocks of INCEPTIONS; 1024 -> 10
    "googlenet": HandCount(96, 5_977_530, googlenet_params),
    # stem 7x7 64 with batch norm; two residual units per stage at 64, 128, 256, 512 (1x1 projections
    # where the stage halves the size); 512 -> 10
    "resnet18": HandCount(96, 11_178_378, resnet18_params),
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> list[tuple[str, torch.Size]]:
    return [(k, v.shape) for k, v in model.state_dict().items()]


def meta_model(name: str, **kwargs: object) -> nn.Module:
    """Built on the meta device: parameters with shapes but no storage, and no initialisation cost."""
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.fixture(scope="module")
def native_model() -> Callable[[str], nn.Module]:
    """Float32 models at their native size in eval mode, built once per name for this module
    (and freed after it: VGG-11 alone holds half a gigabyte). Tests only run them under no_grad."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = create_model(name).eval()
        return cache[name]

    return get


def native_size(name: str) -> int:
    return get_model_spec(name).input_size


def _fits(name: str, network: nn.Module, size: int) -> bool:
    try:
        check_input_size(name, network, size)
    except InputSizeError:
        return False
    return True


@functools.cache
def smallest(name: str) -> int:
    """The smallest input side ``name`` takes by the shape formulas (checked against forward passes below)."""
    network = meta_model(name)
    return next(size for size in range(1, native_size(name) + 1) if _fits(name, network, size))


def small_size(name: str) -> int:
    """A cheap input side that runs: the data's own 28 (or less where the native size is less), or the smallest."""
    return max(smallest(name), min(28, native_size(name)))


@functools.cache
def native_macs(name: str) -> int:
    """Multiply-accumulates of one image at the native size (counted on the meta device: free)."""
    return summarize_model(name).total_macs


def _has(model: nn.Module, kind: type | tuple[type, ...]) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


def is_stochastic(model: nn.Module) -> bool:
    """Dropout and batch norm are the layers that behave differently in training and in evaluation."""
    return _has(model, (nn.Dropout, _BatchNorm))


def without_dropout(model: nn.Module) -> nn.Module:
    """Train mode (batch statistics for batch norm) with every dropout layer switched off."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_matches_the_hand_count(name: str) -> None:
    if name not in HAND_COUNTS:
        pytest.fail(f"{name} has no hand-checked parameter count: add HAND_COUNTS[{name!r}] = HandCount(<native "
                    f"size>, <parameters by hand>, <per-layer formula>) in tests/test_models.py")
    size, params, formula = HAND_COUNTS[name]
    assert native_size(name) == size  # the book's input size: the count below depends on it
    assert count(meta_model(name)) == formula(1, 10) == params
    # The formula follows the input channels and classes too.
    assert count(meta_model(name, in_channels=3, num_classes=7)) == formula(3, 7)


def test_the_hand_counts_are_of_registered_models() -> None:
    assert set(HAND_COUNTS) - set(list_models()) == set()  # a stale entry after a model was renamed or removed


def test_a_real_model_has_its_parameters_before_any_forward() -> None:
    assert count(create_model("lenet")) == HAND_COUNTS["lenet"].params  # initialised, not on the meta device


@pytest.mark.parametrize("name", list_models())
def test_no_lazy_modules(name: str) -> None:
    model = meta_model(name)
    assert not [m for m in model.modules() if isinstance(m, LazyModuleMixin)]
    assert not [n for n, p in model.named_parameters() if isinstance(p, UninitializedParameter)]
    assert not [n for n, b in model.named_buffers() if isinstance(b, UninitializedBuffer)]


# --- output shapes ----------------------------------------------------------------------------

# A forward pass above this many multiply-accumulates per image takes seconds on a shared CPU core.
REAL_FORWARD_MACS = 2_000_000_000


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_output_shape_at_native_size(name: str, batch: int, native_model: Callable[[str], nn.Module]) -> None:
    size = native_size(name)
    if native_macs(name) > REAL_FORWARD_MACS:
        # vgg11 (~7.5 GMACs per image): shapes only here; test_vgg11_block_shapes_match_seed runs it once for real.
        model = meta_model(name).eval()
        x = torch.zeros(batch, 1, size, size, device="meta")
    else:
        model = native_model(name)
        x = torch.randn(batch, 1, size, size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (batch, 10)
    if x.device.type == "cpu":
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("backend", ["torch", "scratch"])
@pytest.mark.parametrize("name", list_models())
def test_output_shape_with_other_classes_and_channels(name: str, backend: str) -> None:
    # Shapes only: the values with other channels are checked block by block in the book's definitions below.
    size = small_size(name)
    model = meta_model(name, num_classes=7, in_channels=3, input_size=size, backend=backend).eval()
    assert model(torch.zeros(2, 3, size, size, device="meta")).shape == (2, 7)
    assert model.config == {"name": name, "num_classes": 7, "in_channels": 3, "backend": backend,
                            "input_size": size}


# --- the chapter's printed shapes ---------------------------------------------------------------

def test_lenet_layer_shapes_match_seed() -> None:
    rows = summarize(create_model("lenet"), 28).layers
    assert [(r.type, tuple(r.output_shape)) for r in rows] == [
        ("Conv2d", (1, 6, 28, 28)), ("Sigmoid", (1, 6, 28, 28)), ("AvgPool2d", (1, 6, 14, 14)),
        ("Conv2d", (1, 16, 10, 10)), ("Sigmoid", (1, 16, 10, 10)), ("AvgPool2d", (1, 16, 5, 5)),
        ("Flatten", (1, 400)),
        ("Linear", (1, 120)), ("Sigmoid", (1, 120)),
        ("Linear", (1, 84)), ("Sigmoid", (1, 84)),
        ("Linear", (1, 10)),
    ]


def test_vgg11_block_shapes_match_seed() -> None:
    model = create_model("vgg11").eval()  # the one real VGG-11 forward at 224 (~7.5 GMACs)
    children = list(model.children())
    blocks, head = children[:5], nn.Sequential(*children[5:])
    assert all(isinstance(b, nn.Sequential) and isinstance(b[-1], nn.MaxPool2d) for b in blocks)
    x = torch.rand(1, 1, 224, 224)
    shapes = []
    with torch.no_grad():
        for block in blocks:
            x = block(x)
            shapes.append(tuple(x.shape))
        shapes.append(tuple(head(x).shape))
    assert shapes == [(1, 64, 112, 112), (1, 128, 56, 56), (1, 256, 28, 28), (1, 512, 14, 14), (1, 512, 7, 7),
                      (1, 10)]


def test_nin_top_level_shapes_match_seed(native_model: Callable[[str], nn.Module]) -> None:
    x = torch.rand(1, 1, 224, 224)
    shapes = {}
    with torch.no_grad():
        for name, child in native_model("nin").named_children():
            x = child(x)
            shapes[name] = tuple(x.shape)
    assert shapes == {
        "0": (1, 96, 54, 54), "1": (1, 96, 26, 26), "2": (1, 256, 26, 26), "3": (1, 256, 12, 12),
        "4": (1, 384, 12, 12), "5": (1, 384, 5, 5), "6": (1, 384, 5, 5), "7": (1, 10, 5, 5),
        "8": (1, 10, 1, 1), "9": (1, 10),
    }


# --- training behaviour -----------------------------------------------------------------------

# Reduced sizes (small_size) keep a backward pass of the 224x224 networks cheap; the classifier follows the size.

@pytest.mark.parametrize("name", list_models())
def test_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    size = small_size(name)
    model = create_model(name, input_size=size).train()
    x, labels = torch.randn(2, 1, size, size), torch.tensor([3, 7])
    nn.functional.cross_entropy(model(x), labels).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", list_models())
def test_eval_mode_is_deterministic(name: str) -> None:
    torch.manual_seed(0)
    size = small_size(name)
    model = create_model(name, input_size=size).train()
    x = torch.randn(4, 1, size, size)
    with torch.no_grad():
        train_a, train_b = model(x), model(x)  # also moves the batch-norm running estimates off their start
        model.eval()
        eval_a, eval_b = model(x), model(x)
    assert torch.equal(eval_a, eval_b)
    if not is_stochastic(model):  # no dropout or batch norm: the two modes compute the same function
        assert torch.equal(train_a, eval_a) and torch.equal(train_a, train_b)
    if _has(model, nn.Dropout):  # otherwise the check above would pass with dropout never switched on
        assert not torch.equal(train_a, train_b)
    if _has(model, _BatchNorm):  # evaluation reads the running estimates, not the batch statistics
        assert not torch.allclose(eval_a, train_a)


# --- the from-scratch backend against torch.nn -----------------------------------------------

SCRATCH_TWINS = {nn.Conv2d: layers.Conv2d, nn.MaxPool2d: layers.MaxPool2d, nn.AvgPool2d: layers.AvgPool2d,
                 nn.BatchNorm1d: layers.BatchNorm1d, nn.BatchNorm2d: layers.BatchNorm2d,
                 nn.AdaptiveAvgPool2d: layers.GlobalAvgPool2d}


@pytest.mark.parametrize("name", list_models())
def test_backends_share_state_dict_keys_and_each_builds_every_layer_from_its_own_set(name: str) -> None:
    ours, theirs = meta_model(name, backend="scratch"), meta_model(name)
    assert shapes(ours) == shapes(theirs)
    # Module by module, down to the insides of the blocks: the scratch twin where torch has its layer.
    assert [type(m) for m in ours.modules()] == [SCRATCH_TWINS.get(type(m), type(m)) for m in theirs.modules()]
    assert _has(ours, layers.Conv2d) and not _has(theirs, layers.Conv2d)


@pytest.mark.parametrize("name", list_models())
def test_scratch_backend_matches_torch_in_float64(name: str) -> None:
    torch.manual_seed(0)
    size = small_size(name)
    theirs = create_model(name, input_size=size).double()
    ours = create_model(name, input_size=size, backend="scratch").double()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    without_dropout(theirs), without_dropout(ours)
    x = torch.randn(2, 1, size, size, dtype=torch.float64)

    out_theirs, out_ours = theirs(x), ours(x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=1e-7, atol=1e-9)
    upstream = torch.randn_like(out_theirs)
    out_theirs.backward(upstream)
    out_ours.backward(upstream)

    # Batch norm cancels the bias before it, whose gradient is zero up to rounding at the scale
    # of the largest gradient: tolerances are relative to each tensor and to the whole model.
    scale = max(p.grad.abs().max().item() for p in theirs.parameters())
    for (key, p_theirs), p_ours in zip(theirs.named_parameters(), ours.parameters(), strict=True):
        assert p_ours.grad is not None, key
        atol = 1e-8 * p_theirs.grad.abs().max().item() + 1e-11 * scale
        torch.testing.assert_close(p_ours.grad, p_theirs.grad, rtol=1e-7, atol=atol, msg=lambda m, k=key: f"{k}: {m}")
    # Training updated the running estimates identically.
    for (key, b_theirs), b_ours in zip(theirs.named_buffers(), ours.buffers(), strict=True):
        torch.testing.assert_close(b_ours, b_theirs, rtol=1e-9, atol=1e-12, msg=lambda m, k=key: f"{k}: {m}")


# --- the book's definitions, step by step -------------------------------------------------------
#
# Each block and network written again as the book defines it (Dive into Deep Learning, modern
# CNNs): a plain function of the module's own weights through torch.nn.functional, compared with
# the module's output in float64. The weights are read by state_dict key, which also pins where
# each layer sits. A moved, removed or swapped activation, a wrong pooling type, size or stride, a
# swapped path or concatenation order changes the values, not the shapes or the parameter count.

BACKENDS = ["torch", "scratch"]
EXACT = {"rtol": 1e-10, "atol": 1e-12}

Weights = dict[str, torch.Tensor]
Book = Callable[[Weights, torch.Tensor, bool], torch.Tensor]


def f_conv(w: Weights, key: str, x: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    return F.conv2d(x, w[f"{key}.weight"], w[f"{key}.bias"], stride=stride, padding=padding)


def f_linear(w: Weights, key: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[f"{key}.weight"], w[f"{key}.bias"])


def f_bn(w: Weights, key: str, x: torch.Tensor, training: bool) -> torch.Tensor:
    """PyTorch's defaults (momentum 0.1, eps 1e-5); in training it updates ``w``'s running estimates."""
    return F.batch_norm(x, w[f"{key}.running_mean"], w[f"{key}.running_var"], w[f"{key}.weight"],
                        w[f"{key}.bias"], training=training, momentum=0.1, eps=1e-5)


def f_global_avg(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


def assert_book_definition(module: nn.Module, book: Book, x: torch.Tensor) -> None:
    """``module(x) == book(weights, x, training)`` in float64, in evaluation and then in training mode.

    The batch-norm affine parameters and running estimates are moved off their start first, so
    that evaluation reads them; training must move the running estimates as the book's layer
    does. The same seed before both sides gives dropout the same masks.
    """
    module = module.double()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.3)
                m.running_mean.normal_(0, 0.3), m.running_var.uniform_(0.5, 1.5)
    x = x.double()
    for training in (False, True):
        module.train(training)
        w = {key: value.clone() for key, value in module.state_dict().items()}
        torch.manual_seed(1)
        expected = book(w, x, training)
        torch.manual_seed(1)
        with torch.no_grad():
            actual = module(x)
        torch.testing.assert_close(actual, expected, **EXACT, msg=lambda m, t=training: f"training={t}: {m}")
        for key, value in module.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                torch.testing.assert_close(value, w[key], **EXACT, msg=lambda m, k=key: f"{k}: {m}")


def book_lenet(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Sigmoid after every layer but the last, 2x2 average pooling after each convolution."""
    x = F.avg_pool2d(torch.sigmoid(f_conv(w, "0", x, padding=2)), kernel_size=2, stride=2)
    x = F.avg_pool2d(torch.sigmoid(f_conv(w, "3", x)), kernel_size=2, stride=2)
    x = torch.sigmoid(f_linear(w, "7", x.flatten(1)))
    x = torch.sigmoid(f_linear(w, "9", x))
    return f_linear(w, "11", x)


def book_lenet_bn(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Batch norm between each layer and its sigmoid; no padding."""
    x = F.avg_pool2d(torch.sigmoid(f_bn(w, "1", f_conv(w, "0", x), training)), kernel_size=2, stride=2)
    x = F.avg_pool2d(torch.sigmoid(f_bn(w, "5", f_conv(w, "4", x), training)), kernel_size=2, stride=2)
    x = torch.sigmoid(f_bn(w, "10", f_linear(w, "9", x.flatten(1)), training))
    x = torch.sigmoid(f_bn(w, "13", f_linear(w, "12", x), training))
    return f_linear(w, "15", x)


def book_lenet_modern(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
    """conv -> 2x2 max pool -> batch norm -> ReLU, twice; one hidden layer with batch norm and ReLU."""
    x = F.relu(f_bn(w, "2", F.max_pool2d(f_conv(w, "0", x, padding=2), kernel_size=2, stride=2), training))
    x = F.relu(f_bn(w, "6", F.max_pool2d(f_conv(w, "4", x), kernel_size=2, stride=2), training))
    x = F.relu(f_bn(w, "10", f_linear(w, "9", x.flatten(1)), training))
    return f_linear(w, "12", x)


def book_alexnet(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
    """ReLU after every convolution and hidden layer, 3x3 stride-2 max pools, dropout 0.5 after the hidden layers."""
    x = F.max_pool2d(F.relu(f_conv(w, "0", x, stride=4, padding=1)), kernel_size=3, stride=2)
    x = F.max_pool2d(F.relu(f_conv(w, "3", x, padding=2)), kernel_size=3, stride=2)
    x = F.relu(f_conv(w, "6", x, padding=1))
    x = F.relu(f_conv(w, "8", x, padding=1))
    x = F.max_pool2d(F.relu(f_conv(w, "10", x, padding=1)), kernel_size=3, stride=2)
    x = F.dropout(F.relu(f_linear(w, "14", x.flatten(1))), 0.5, training)
    x = F.dropout(F.relu(f_linear(w, "17", x)), 0.5, training)
    return f_linear(w, "20", x)


def book_vgg_block(w: Weights, x: torch.Tensor, num_convs: int, prefix: str = "") -> torch.Tensor:
    """``num_convs`` times a padded 3x3 convolution and ReLU, then a 2x2 stride-2 max pool."""
    for i in range(num_convs):
        x = F.relu(f_conv(w, f"{prefix}{2 * i}", x, padding=1))
    return F.max_pool2d(x, kernel_size=2, stride=2)


def book_vgg(arch: tuple[tuple[int, int], ...]) -> Book:
    """The blocks of ``arch``, then two hidden layers with ReLU and dropout 0.5, and the output layer."""
    def book(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
        for i, (num_convs, _) in enumerate(arch):
            x = book_vgg_block(w, x, num_convs, f"{i}.")
        n = len(arch)  # the Flatten's index
        x = F.dropout(F.relu(f_linear(w, f"{n + 1}", x.flatten(1))), 0.5, training)
        x = F.dropout(F.relu(f_linear(w, f"{n + 4}", x)), 0.5, training)
        return f_linear(w, f"{n + 7}", x)

    return book


def book_nin_block(w: Weights, x: torch.Tensor, stride: int, padding: int, prefix: str = "") -> torch.Tensor:
    """A convolution and two 1x1 convolutions, each followed by ReLU."""
    x = F.relu(f_conv(w, f"{prefix}0", x, stride=stride, padding=padding))
    x = F.relu(f_conv(w, f"{prefix}2", x))
    return F.relu(f_conv(w, f"{prefix}4", x))


def book_nin(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Three NiN blocks each followed by a 3x3 stride-2 max pool, dropout, a NiN block per class, global mean."""
    x = F.max_pool2d(book_nin_block(w, x, 4, 0, "0."), kernel_size=3, stride=2)
    x = F.max_pool2d(book_nin_block(w, x, 1, 2, "2."), kernel_size=3, stride=2)
    x = F.max_pool2d(book_nin_block(w, x, 1, 1, "4."), kernel_size=3, stride=2)
    x = book_nin_block(w, F.dropout(x, 0.5, training), 1, 1, "7.")
    return f_global_avg(x).flatten(1)


def book_inception(w: Weights, x: torch.Tensor, prefix: str = "") -> torch.Tensor:
    """1x1 conv | 1x1 conv -> 3x3 conv | 1x1 conv -> 5x5 conv | 3x3 max pool -> 1x1 conv, ReLU after
    every convolution, concatenated on channels in that order."""
    def conv(key: str, x: torch.Tensor, padding: int = 0) -> torch.Tensor:
        return F.relu(f_conv(w, prefix + key, x, padding=padding))

    p1 = conv("p1_1", x)
    p2 = conv("p2_2", conv("p2_1", x), padding=1)
    p3 = conv("p3_2", conv("p3_1", x), padding=2)
    p4 = conv("p4_2", F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
    return torch.cat((p1, p2, p3, p4), dim=1)


def book_googlenet(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Stem (7x7 conv, 1x1 conv, 3x3 conv, each with ReLU, two 3x3 stride-2 max pools), 2 + 5 + 2
    Inception blocks with a 3x3 stride-2 max pool between the stages, global mean, one linear layer."""
    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)

    x = pool(F.relu(f_conv(w, "0.0", x, stride=2, padding=3)))
    x = pool(F.relu(f_conv(w, "1.2", F.relu(f_conv(w, "1.0", x)), padding=1)))
    for stage, blocks in ((2, 2), (3, 5), (4, 2)):
        for i in range(blocks):
            x = book_inception(w, x, f"{stage}.{i}.")
        x = pool(x) if stage < 4 else f_global_avg(x)
    return f_linear(w, "5", x.flatten(1))


def book_residual(w: Weights, x: torch.Tensor, training: bool, stride: int = 1, projection: bool = False,
                  prefix: str = "") -> torch.Tensor:
    """ReLU(BN(conv1 X)) -> BN(conv2 .) + (conv3 X or X) -> ReLU, 3x3 convolutions padded by 1."""
    y = F.relu(f_bn(w, f"{prefix}bn1", f_conv(w, f"{prefix}conv1", x, stride=stride, padding=1), training))
    y = f_bn(w, f"{prefix}bn2", f_conv(w, f"{prefix}conv2", y, padding=1), training)
    if projection:
        x = f_conv(w, f"{prefix}conv3", x, stride=stride)
    return F.relu(y + x)


def book_resnet_block(w: Weights, x: torch.Tensor, training: bool, num_residuals: int, first_block: bool,
                      prefix: str = "") -> torch.Tensor:
    """The first unit halves the size through a projection unless it is the first block; the others keep it."""
    for i in range(num_residuals):
        halve = i == 0 and not first_block
        x = book_residual(w, x, training, 2 if halve else 1, halve, f"{prefix}{i}.")
    return x


def book_resnet18(w: Weights, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Stem (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max pool), four stages of two units, global mean."""
    x = F.relu(f_bn(w, "0.1", f_conv(w, "0.0", x, stride=2, padding=3), training))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for stage in range(1, 5):
        x = book_resnet_block(w, x, training, 2, stage == 1, f"{stage}.")
    return f_linear(w, "7", f_global_avg(x).flatten(1))


BOOK_NETWORKS: dict[str, Book] = {  # each network as the book defines it
    "lenet": book_lenet, "lenet_bn": book_lenet_bn, "lenet_modern": book_lenet_modern, "alexnet": book_alexnet,
    "vgg11_small": book_vgg(VGG11_SMALL), "nin": book_nin, "googlenet": book_googlenet, "resnet18": book_resnet18,
}


@pytest.mark.parametrize("name", list(BOOK_NETWORKS))
def test_network_computes_the_books_definition(name: str) -> None:
    # vgg11 is vgg11_small's function at four times the channels (its counts are pinned in HAND_COUNTS).
    book, size = BOOK_NETWORKS[name], small_size(name)
    torch.manual_seed(0)
    assert_book_definition(create_model(name, input_size=size), book, torch.randn(2, 1, size, size))


@pytest.mark.parametrize("backend", BACKENDS)
def test_vgg_block_is_convolutions_with_relu_then_a_max_pool(backend: str) -> None:
    torch.manual_seed(0)
    block = vgg_block(2, 3, 4, backend=backend)
    assert_book_definition(block, lambda w, x, _: book_vgg_block(w, x, 2), torch.randn(2, 3, 9, 9))  # 9 -> 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_vgg_from_a_table_computes_the_books_definition(backend: str) -> None:
    arch = ((1, 3), (2, 4))
    torch.manual_seed(0)
    model = vgg(arch, num_classes=5, in_channels=2, input_size=12, fc_hidden=6, backend=backend)  # 12 -> 6 -> 3
    assert_book_definition(model, book_vgg(arch), torch.randn(3, 2, 12, 12))


def test_vgg_defaults_are_one_channel_224_inputs_ten_classes_and_4096_wide_hidden_layers() -> None:
    with torch.device("meta"):
        model = vgg(((1, 2),))  # 224 -> 112
    assert isinstance(model[0][0], nn.Conv2d) and model[0][0].in_channels == 1
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [
        (2 * 112 * 112, 4096), (4096, 4096), (4096, 10)]
    with torch.device("meta"):
        classifier = vgg(())  # no blocks: the classifier alone, on the flattened 224x224 image
    assert next(m for m in classifier if isinstance(m, nn.Linear)).in_features == 224 * 224
    with pytest.raises(InputSizeError, match=r"^input 1x1 is too small for vgg: "):
        vgg(((1, 2),), input_size=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nin_block_is_a_convolution_and_two_1x1_convolutions_each_with_relu(backend: str) -> None:
    torch.manual_seed(0)
    block = nin_block(3, 4, 5, 2, 1, backend=backend)  # 11 -> 5
    assert_book_definition(block, lambda w, x, _: book_nin_block(w, x, 2, 1), torch.randn(2, 3, 11, 11))


@pytest.mark.parametrize("backend", BACKENDS)
def test_inception_concatenates_the_four_paths_in_order(backend: str) -> None:
    torch.manual_seed(0)
    # Every path has its own width (2, 3, 4, 5) and every 1x1 reduction differs from what follows
    # it, so that a swapped path, width or concatenation order changes the values.
    block = Inception(4, 2, (6, 3), (1, 4), 5, backend=backend)
    assert_book_definition(block, lambda w, x, _: book_inception(w, x), torch.randn(2, 4, 7, 7))



@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("c_in", "stride", "projection", "size"), [(3, 2, True, 9), (4, 1, False, 6), (3, 1, True, 6)])
def test_residual_is_the_books_unit(backend: str, c_in: int, stride: int, projection: bool, size: int) -> None:
    torch.manual_seed(0)
    kwargs = {"use_1x1conv": True} if projection else {}
    if stride != 1:
        kwargs["stride"] = stride
    unit = Residual(c_in, 4, backend=backend, **kwargs)  # stride 1 and no projection are the defaults
    assert (unit.conv3 is not None) == projection
    assert_book_definition(unit, lambda w, x, t: book_residual(w, x, t, stride, projection),
                           torch.randn(2, c_in, size, size))



@pytest.mark.parametrize("backend", BACKENDS)
def test_resnet_block_halves_the_size_in_its_first_unit_unless_it_is_the_first_block(backend: str) -> None:
    torch.manual_seed(0)
    kwargs = {} if backend == "torch" else {"backend": backend}  # torch is the default
    block = resnet_block(3, 4, 2, **kwargs)  # first_block=False is the default
    assert_book_definition(block, lambda w, x, t: book_resnet_block(w, x, t, 2, False), torch.randn(2, 3, 8, 8))
    expected_conv = layers.Conv2d if backend == "scratch" else nn.Conv2d
    assert {type(m) for m in block.modules() if isinstance(m, nn.Conv2d)} == {expected_conv}
    first = resnet_block(4, 4, 2, first_block=True, **kwargs)
    assert_book_definition(first, lambda w, x, t: book_resnet_block(w, x, t, 2, True), torch.randn(2, 4, 6, 6))


# --- the chapter's quiz --------------------------------------------------------------------------

def test_quiz_fully_connected_layer_on_a_colour_image() -> None:
    fc = nn.Linear(3 * 256 * 256, 1000, device="meta")  # 196,609,000 parameters: no storage needed
    assert count(fc) == 3 * 256 * 256 * 1000 + 1000 == 196_609_000


def test_quiz_convolution_parameters() -> None:
    assert count(layers.Conv2d(3, 10, kernel_size=3)) == count(nn.Conv2d(3, 10, 3)) == 10 * 3 * 3 * 3 + 10 == 280


def test_quiz_padded_convolution_output_size() -> None:
    assert conv2d_output_size(100, 3, padding=2) == (102, 102)  # 100 + 4 - 3 + 1
    conv_layer = layers.Conv2d(3, 4, kernel_size=3, padding=2)
    assert conv_layer(torch.randn(1, 3, 100, 100)).shape == (1, 4, 102, 102)
    assert feature_size(conv_layer, 100) == 102


# --- shape formulas against forward passes ----------------------------------------------------

SWEEP = [1, 2, 11, 12, 15, 16, 20, 28, 31, 32, 33, 64, 65, 66, 67, 96]


def features(model: nn.Module) -> nn.Module:
    """The top-level children before the first Flatten (the part whose size the formulas check)."""
    children = list(model.children())
    cut = next((i for i, c in enumerate(children) if isinstance(c, nn.Flatten)), len(children))
    return nn.Sequential(*children[:cut])


def test_smallest_inputs_follow_the_hand_arithmetic() -> None:
    # By hand from floor((n + 2p - k) / s) + 1 layer by layer (docs/tour.md prints some of them):
    # lenet 12 -> 12 -> 6 -> 2 -> 1; lenet_bn 16 -> 12 -> 6 -> 2 -> 1; lenet_modern 12 -> 12 -> 6 -> 2 -> 1;
    # alexnet 65 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1; nin 67 -> 15 -> 7 -> 3 -> 1; VGG 32 halved five times;
    # GoogLeNet and ResNet pad everything. A model missing here is still checked against forward passes below.
    by_hand = {"lenet": 12, "lenet_bn": 16, "lenet_modern": 12, "alexnet": 65, "nin": 67, "vgg11": 32,
               "vgg11_small": 32, "googlenet": 1, "resnet18": 1}
    assert {name: smallest(name) for name in by_hand} == by_hand


@pytest.mark.parametrize("name", list_models())
def test_check_input_size_agrees_with_forward(name: str) -> None:
    native = meta_model(name).eval()
    for size in sorted({*SWEEP, smallest(name) - 1, smallest(name)} - {0}):
        x = torch.zeros(2, 1, size, size, device="meta")
        try:
            model = meta_model(name, input_size=size).eval()
        except InputSizeError:
            assert size < smallest(name)
            with pytest.raises(RuntimeError):
                features(native)(x)
        else:
            assert size >= smallest(name)
            assert model(x).shape == (2, 10), size


@pytest.mark.parametrize("name", list_models())
def test_smallest_input_runs_for_real_and_one_less_fails(name: str) -> None:
    # The smallest size from the shape formulas against real forward passes: a formula one off either way fails.
    size = smallest(name)
    model = create_model(name, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)
        if size > 1:
            with pytest.raises(InputSizeError):
                create_model(name, input_size=size - 1)
            with pytest.raises(RuntimeError):
                features(model)(torch.randn(1, 1, size - 1, size - 1))


def test_lenet_at_20_sizes_its_classifier_from_the_formula() -> None:
    model = create_model("lenet", input_size=20)  # 20 -> 20 -> 10 -> 6 -> 3
    first_linear = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert first_linear.in_features == 16 * 3 * 3
    assert model(torch.randn(2, 1, 20, 20)).shape == (2, 10)


def test_googlenet_at_16_works_as_the_formula_says() -> None:
    assert check_input_size("googlenet", meta_model("googlenet"), 16) == 1
    with torch.no_grad():
        assert create_model("googlenet", input_size=16).eval()(torch.randn(1, 1, 16, 16)).shape == (1, 10)


def test_alexnet_at_28_names_the_layer_where_the_map_vanishes() -> None:
    # 28 -> conv 11/4 pad 1 -> 5 -> pool 3/2 -> 2 -> conv 5 pad 2 -> 2 -> pool 3/2 at layer 5: nothing left
    with pytest.raises(InputSizeError, match=r"alexnet.*'5' \(MaxPool2d\) on a 2x2 map") as info:
        create_model("alexnet", input_size=28)
    assert "28x28" in str(info.value)
    assert isinstance(info.value, UserError)


def test_check_input_size_rejects_non_positive_sizes() -> None:
    with pytest.raises(InputSizeError) as info:
        check_input_size("lenet", meta_model("lenet"), 0)
    assert str(info.value) == "input size must be positive, got 0"
    assert check_input_size("pointwise", nn.Conv2d(1, 1, 1), 1) == 1  # one pixel is a valid input


def test_feature_size_follows_each_layers_formula_on_the_height_axis() -> None:
    # Each case against a real forward pass. The networks here are square; a non-square window
    # shows which axis the size is read from: the height.
    cases = [
        (nn.Conv2d(1, 1, 3, stride=2), 9, 4), (nn.Conv2d(1, 1, 3, dilation=2), 9, 5),
        (nn.Conv2d(1, 1, 3, padding=2), 7, 9), (nn.Conv2d(1, 1, 5, padding="same"), 7, 7),
        (nn.Conv2d(1, 1, 3, padding="valid"), 7, 5), (nn.Conv2d(1, 1, (1, 3)), 5, 5),
        (nn.MaxPool2d(3, 2, padding=1), 8, 4), (nn.MaxPool2d(3, stride=1, dilation=2), 9, 5),
        (nn.MaxPool2d(2, 2, ceil_mode=True), 5, 3), (nn.MaxPool2d((1, 3), stride=1), 5, 5),
        (nn.AvgPool2d(3, 2, padding=1), 8, 4), (nn.AvgPool2d(2, 2, ceil_mode=True), 5, 3),
        (nn.AvgPool2d((1, 3), stride=1), 5, 5),
        (nn.AdaptiveAvgPool2d((1, 1)), 5, 1), (layers.GlobalAvgPool2d(), 5, 1),
    ]
    for layer, size, expected in cases:
        assert feature_size(layer, size) == expected, layer
        assert layer(torch.zeros(1, 1, size, size)).shape[-2] == expected, layer


def test_feature_size_names_the_layer_where_the_map_vanishes() -> None:
    with pytest.raises(InputSizeError) as info:
        feature_size(nn.MaxPool2d(3, 2), 2)  # a layer on its own is named by its type
    assert str(info.value).startswith("the feature map vanishes at layer 'MaxPool2d' (MaxPool2d) on a 2x2 map: ")
    toy = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 5)))
    with pytest.raises(InputSizeError) as info:
        check_input_size("toy", toy, 5)  # 5 -> 3, too small for the nested 5x5 kernel
    assert str(info.value).startswith(
        "input 5x5 is too small for toy: the feature map vanishes at layer '1.1' (Conv2d) on a 3x3 map: ")
    assert check_input_size("toy", toy, 7) == 1


def test_feature_size_of_the_building_blocks_matches_forward() -> None:
    cases = [
        (vgg_block(2, 3, 8), 3, 33, 16),
        (nin_block(3, 8, 11, 4, 0), 3, 224, 54),
        (Inception(4, 2, (2, 3), (2, 3), 2), 4, 9, 9),
        (Residual(3, 8, use_1x1conv=True, stride=2), 3, 9, 5),
        (Residual(8, 8), 8, 7, 7),
    ]
    for block, channels, size, expected in cases:
        assert feature_size(block, size) == expected
        with torch.no_grad():
            assert block.eval()(torch.randn(2, channels, size, size)).shape[-2:] == (expected, expected)


def test_vgg_from_a_table() -> None:
    arch = ((1, 4), (2, 8))
    model = vgg(arch, num_classes=5, in_channels=2, input_size=12, fc_hidden=16)  # 12 -> 6 -> 3
    assert count(model) == vgg_params(arch, 2, 5, side=3, hidden=16)
    assert model.eval()(torch.randn(3, 2, 12, 12)).shape == (3, 5)
    with pytest.raises(InputSizeError, match="tiny"):
        vgg(arch, input_size=3, name="tiny")


# --- the registry -----------------------------------------------------------------------------

@pytest.fixture
def private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the registry, so that what a test registers disappears with it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_register_a_new_model(private_registry: None) -> None:
    @register_model(input_size=8)
    def tiny(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 8, backend: str = "torch") -> nn.Module:
        """A linear classifier.

        More words.
        """
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, num_classes))

    assert "tiny" in list_models()
    spec = get_model_spec("tiny")
    assert (spec.name, spec.input_size, spec.description, spec.builder) == ("tiny", 8, "A linear classifier.", tiny)
    model = create_model("tiny", num_classes=3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert model.config == {"name": "tiny", "num_classes": 3, "in_channels": 1, "backend": "torch", "input_size": 8}


def test_duplicate_name_is_refused(private_registry: None) -> None:
    original = get_model_spec("lenet")
    with pytest.raises(ValueError, match="already registered"):
        @register_model(input_size=28)
        def lenet(*, num_classes: int = 10) -> nn.Module:
            return nn.Identity()
    assert get_model_spec("lenet") is original


def test_builder_with_positional_arguments_is_refused(private_registry: None) -> None:
    with pytest.raises(TypeError, match="keyword-only"):
        @register_model(input_size=28)
        def positional(num_classes: int = 10) -> nn.Module:
            return nn.Identity()
    assert "positional" not in list_models()


@pytest.mark.parametrize(("typo", "suggestion"), [("alexnt", "alexnet"), ("vgg", "vgg11"), ("resnet", "resnet18"),
                                                  ("googlenet2", "googlenet"), ("LeNet", "lenet")])
def test_unknown_name_suggests_the_closest(typo: str, suggestion: str) -> None:
    with pytest.raises(UnknownModelError, match=f"did you mean {suggestion}") as info:
        create_model(typo)
    assert repr(typo) in str(info.value)
    assert isinstance(info.value, UserError)


def test_unknown_name_without_a_close_match_lists_the_models() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model_spec("transformer")
    assert str(info.value) == f"unknown model 'transformer'; known models: {', '.join(list_models())}"


def test_unknown_name_suggests_at_most_three_names_at_least_half_similar(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry of these names only, so that a model added to the zoo does not change the answer.
    names = ["alexnet", "googlenet", "lenet", "lenet_bn", "lenet_modern", "nin", "resnet18", "vgg11", "vgg11_small"]
    spec = get_model_spec("lenet")
    monkeypatch.setattr(registry, "_REGISTRY", {name: spec for name in names})
    # difflib's ratio against "net": lenet 0.75, alexnet 0.6, resnet18 and lenet_bn 6/11 = 0.55 (the
    # fourth, left out); nothing else reaches 0.5.
    with pytest.raises(UnknownModelError) as info:
        get_model_spec("net")
    assert str(info.value) == "unknown model 'net'; did you mean lenet, alexnet, resnet18?"


def test_a_single_class_is_allowed() -> None:
    assert meta_model("lenet", num_classes=1).config["num_classes"] == 1


def test_rebuild_builds_what_a_config_describes_with_changes() -> None:
    model = meta_model("lenet", num_classes=3, input_size=20, backend="scratch")
    with torch.device("meta"):
        same, changed = rebuild(model.config), rebuild(model.config, backend="torch", num_classes=4)
    assert same.config == model.config and repr(same) == repr(model)
    assert changed.config == {**model.config, "backend": "torch", "num_classes": 4}
    assert _has(same, layers.Conv2d) and not _has(changed, layers.Conv2d)
    assert list(changed.children())[-1].out_features == 4


@pytest.mark.parametrize(("kwargs", "message"),
                         [({"num_classes": 0}, "num_classes"), ({"in_channels": 0}, "in_channels")])
def test_bad_classes_or_channels_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_model("lenet", **kwargs)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        create_model("lenet", backend="numpy")


@pytest.mark.parametrize("name", list_models())
def test_config_rebuilds_the_same_architecture(name: str) -> None:
    size = max(smallest(name), 40)
    model = meta_model(name, num_classes=7, in_channels=3, input_size=size, backend="scratch")
    config = json.loads(json.dumps(model.config))  # what a checkpoint stores
    rebuilt = meta_model(config.pop("name"), **config)
    assert repr(rebuilt) == repr(model)
    assert shapes(rebuilt) == shapes(model)
    assert rebuilt.config == model.config
