"""Layer-by-layer summaries and the `convzoo models` / `convzoo summary` commands.

The expected rows come from a forward pass on the ``meta`` device (shapes only, no arithmetic)
with hooks on the leaf modules, and MACs by hand from those shapes (a convolution costs
``C_in/groups * kh * kw`` per output value, a linear layer ``in_features``); PyTorch's own
FLOP counter over the ``torch.nn`` network checks the totals.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convzoo import summary as summary_module
from convzoo.cli import main
from convzoo.models import InputSizeError, create_model, get_model_spec, list_models
from convzoo.summary import ModelSummary, summarize, summarize_model

MODELS = list_models()  # every registered model (its hand-checked count is tests/test_models.py's HAND_COUNTS)


def native_size(name: str) -> int:
    return get_model_spec(name).input_size


def own_params(name: str) -> int:
    """The parameters the network itself holds (built on the meta device: no memory), which the summary must count."""
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name).parameters())

ROW_KEYS = {"name", "type", "output_shape", "params", "macs"}
SUMMARY_KEYS = {"model", "input_shape", "layers", "total_params", "total_macs"}


pytestmark = pytest.mark.usefixtures("one_thread")

LENET_SHAPES = [
    ("Conv2d", [1, 6, 28, 28]), ("Sigmoid", [1, 6, 28, 28]), ("AvgPool2d", [1, 6, 14, 14]),
    ("Conv2d", [1, 16, 10, 10]), ("Sigmoid", [1, 16, 10, 10]), ("AvgPool2d", [1, 16, 5, 5]),
    ("Flatten", [1, 400]), ("Linear", [1, 120]), ("Sigmoid", [1, 120]), ("Linear", [1, 84]), ("Sigmoid", [1, 84]),
    ("Linear", [1, 10]),
]
# conv1 6 maps of 28x28 with 1*5*5 products each, conv2 16 maps of 10x10 with 6*5*5 each, then the three layers
LENET_MACS = 6 * 25 * 28 * 28 + 16 * 6 * 25 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10


def expected_rows(name: str, size: int, in_channels: int = 1, num_classes: int = 10) -> list[dict]:
    """The leaf modules in the order a meta-device forward pass calls them, with MACs by hand."""
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, num_classes=num_classes, input_size=size).eval()
    rows: list[dict] = []

    def record(module: nn.Module, args: tuple, out: torch.Tensor, name: str) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, nn.Linear):
            macs = out.numel() * module.in_features
        else:
            macs = 0
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append({"name": name, "type": type(module).__name__, "output_shape": list(out.shape),
                     "params": params, "macs": macs})

    for module_name, module in model.named_modules():
        if module_name and not list(module.children()):
            module.register_forward_hook(lambda m, a, o, n=module_name: record(m, a, o, n))
    model(torch.zeros(1, in_channels, size, size, device="meta"))
    return rows


def flop_counter_macs(name: str, size: int) -> int:
    """Total MACs of the torch.nn network as ``torch.utils.flop_counter`` counts them (on meta: free)."""
    with torch.device("meta"):
        model = create_model(name, input_size=size).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, size, size, device="meta"))
    return counter.get_total_flops() // 2


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


# --- the library --------------------------------------------------------------------------------

def test_lenet_summary_matches_seed_and_hand_count() -> None:
    summary = summarize_model("lenet")
    assert isinstance(summary, ModelSummary)
    assert [(r.type, r.output_shape) for r in summary.layers] == LENET_SHAPES
    assert summary.total_macs == LENET_MACS == 416_520
    assert [r.macs for r in summary.layers if r.type in ("Conv2d", "Linear")] == [117_600, 240_000, 48_000, 10_080, 840]
    assert summary.total_params == 61_706


@pytest.mark.parametrize(("name", "size"), [("lenet", 28), ("googlenet", 96)])
def test_macs_agree_between_backends(name: str, size: int) -> None:
    theirs = summarize(create_model(name), size)
    ours = summarize(create_model(name, backend="scratch"), size)
    assert ours.total_macs == theirs.total_macs > 0
    assert ours.total_params == theirs.total_params
    columns = lambda s: [(r.name, r.output_shape, r.params, r.macs) for r in s.layers]  # noqa: E731
    assert columns(ours) == columns(theirs)


def test_summary_leaves_the_model_as_it_was() -> None:
    model = create_model("lenet_bn").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, 28)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no running-stat update
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_summary_of_an_unregistered_module() -> None:
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
    summary = summarize(net, 5, in_channels=2)
    assert summary.model == "Sequential"
    assert summary.input_shape == [1, 2, 5, 5]
    assert [r.output_shape for r in summary.layers] == [[1, 3, 3, 3], [1, 3, 3, 3], [1, 27], [1, 4]]
    assert summary.total_macs == 27 * 2 * 9 + 27 * 4
    assert summarize(net, 5, in_channels=2, name="tiny").model == "tiny"


def test_summary_refuses_an_input_too_small() -> None:
    with pytest.raises(InputSizeError, match="'5' \\(MaxPool2d\\)"):
        summarize(create_model("alexnet", input_size=96), 28)


def test_format_has_a_row_per_layer_and_the_totals() -> None:
    summary = summarize_model("lenet")
    lines = summary.format().splitlines()
    assert lines[0] == "lenet: input (1, 1, 28, 28)"
    assert len(lines) == 2 + len(summary.layers) + 2
    assert lines[-2] == "total parameters: 61,706"
    assert lines[-1].startswith("total MACs: 416,520 (FLOPs = 2 x MACs = 833,040)")


# --- the command line ----------------------------------------------------------------------------

def test_cli_summary_lenet_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "summary", "lenet")
    assert (code, err) == (0, "")
    for layer_type, shape in LENET_SHAPES:
        assert str(tuple(shape)) in out
        assert layer_type in out
    assert "61,706" in out and "416,520" in out


@pytest.mark.parametrize("name", MODELS)
def test_cli_summary_json_for_every_model(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "summary", name, "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert set(data) == SUMMARY_KEYS
    size = native_size(name)
    assert data["model"] == name
    assert data["input_shape"] == [1, 1, size, size]
    for row in data["layers"]:
        assert set(row) == ROW_KEYS
        assert isinstance(row["name"], str) and isinstance(row["type"], str)
        assert all(type(d) is int and d > 0 for d in row["output_shape"])
        assert type(row["params"]) is int and type(row["macs"]) is int
        assert row["params"] >= 0 and row["macs"] >= 0
    # Leaf modules in forward order, with their shapes, parameters and MACs.
    assert data["layers"] == expected_rows(name, size)
    assert data["layers"][-1]["output_shape"] == [1, 10]
    assert type(data["total_params"]) is int and type(data["total_macs"]) is int
    assert sum(r["params"] for r in data["layers"]) == data["total_params"] == own_params(name)
    assert sum(r["macs"] for r in data["layers"]) == data["total_macs"] == flop_counter_macs(name, size) > 0


def test_cli_summary_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "summary", "lenet", "--input-size", "20", "--in-channels", "3", "--num-classes", "7",
                         "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["input_shape"] == [1, 3, 20, 20]
    assert data["layers"] == expected_rows("lenet", 20, in_channels=3, num_classes=7)
    assert [r["output_shape"] for r in data["layers"] if r["type"] == "Flatten"] == [[1, 16 * 3 * 3]]
    assert data["layers"][-1]["output_shape"] == [1, 7]
    # 3 -> 6 5x5, 6 -> 16 5x5, 144 -> 120 -> 84 -> 7
    assert data["total_params"] == (6 * 76) + (16 * 151) + (120 * 145) + (84 * 121) + (7 * 85)


def test_cli_json_is_the_library_summary(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "summary", "lenet_bn", "--json")
    assert json.loads(out) == summarize_model("lenet_bn").to_dict()


def test_cli_alexnet_too_small(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "summary", "alexnet", "--input-size", "28")
    assert (code, out) == (2, "")
    assert_one_error_line(err, "alexnet", "28x28", "'5'", "MaxPool2d")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["summary", "alexnt"], ["unknown model 'alexnt'", "did you mean alexnet"]),
        (["summary", "lenet", "--input-size", "0"], ["positive"]),
        (["summary", "lenet", "--input-size", "-3"], ["positive"]),
        (["summary", "lenet", "--num-classes", "0"], ["num_classes"]),
        (["summary", "lenet", "--in-channels", "0"], ["in_channels"]),
    ],
)
def test_cli_user_errors(argv: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert_one_error_line(err, *fragments)


def test_cli_bad_argument_type(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["summary", "lenet", "--input-size", "big"])
    assert info.value.code == 2
    assert_one_error_line(capsys.readouterr().err, "--input-size", "'big'")


def test_cli_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "models", "--json")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list_models()
    for row in rows:
        name = row["name"]
        assert {"name", "params", "input_size", "macs"} <= set(row)
        assert row["params"] == own_params(name)
        assert row["input_size"] == native_size(name)
        assert row["macs"] == sum(r["macs"] for r in expected_rows(name, native_size(name)))
        assert isinstance(row["description"], str) and row["description"]


def test_installed_script_reports_one_error_line() -> None:
    script = Path(sys.executable).with_name("convzoo")
    assert script.exists(), f"the console script is not installed next to {sys.executable}"
    result = subprocess.run([str(script), "summary", "alexnet", "--input-size", "28"],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert_one_error_line(result.stderr, "alexnet", "'5'", "MaxPool2d")


def _under_memory_limit(code: str, limit_mib: int = 1500) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a child whose address space is capped at ``limit_mib`` MiB."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mib << 20, limit_mib << 20))

    src = str(Path(summary_module.__file__).parents[1])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=cap,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": src,
                               "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"})


def test_a_huge_summary_allocates_nothing() -> None:
    """VGG-11 at the largest input, channels and classes has 141 billion parameters (566 GB of float32):
    tabulated on the meta device within 1.5 GB of address space, torch included."""
    proc = _under_memory_limit("import sys; from convzoo.cli import main; sys.exit(main(['summary', 'vgg11', "
                               "'--input-size', '8192', '--in-channels', '1024', '--num-classes', '1000000']))")
    assert proc.returncode == 0, proc.stderr
    assert "total parameters: 141,562,547,456" in proc.stdout


@pytest.mark.parametrize(("flag", "value", "limit"), [("--input-size", "8193", "8,192"),
                                                      ("--in-channels", "1025", "1,024"),
                                                      ("--num-classes", "1000001", "1,000,000")])
def test_an_absurd_summary_argument_is_refused_naming_the_limit(flag: str, value: str, limit: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "summary", "lenet", flag, value)
    assert (code, out) == (2, "")
    assert_one_error_line(err, flag, f"at most {limit}", f"{int(value):,}")


# --- every network's parameters and MACs, counted by hand ---------------------------------------
# Each network written out layer by layer, with the feature-map side after each stage as the
# book's listings print it; a convolution costs (C_in * k * k) MACs per output value, a linear
# layer C_in per output; biases, batch norm (2 parameters per channel), activations and pooling
# cost no MACs. One table for every registered network (the model tests pin the architecture).

class Hand:
    """Parameters and MACs of a network written out layer by layer, one image of 1 channel."""

    def __init__(self, side: int, channels: int = 1) -> None:
        self.side, self.channels, self.params, self.macs = side, channels, 0, 0

    def conv(self, out: int, k: int, stride: int = 1, pad: int = 0) -> Hand:
        self.side = (self.side + 2 * pad - k) // stride + 1
        self.params += out * self.channels * k * k + out
        self.macs += self.side * self.side * out * self.channels * k * k
        self.channels = out
        return self

    def pool(self, k: int, stride: int, pad: int = 0) -> Hand:
        self.side = (self.side + 2 * pad - k) // stride + 1
        return self

    def bn(self) -> Hand:
        self.params += 2 * self.channels  # scale and shift; the running statistics are buffers
        return self

    def flatten(self) -> Hand:
        self.channels, self.side = self.channels * self.side * self.side, 1
        return self

    def linear(self, out: int) -> Hand:
        self.params += self.channels * out + out
        self.macs += self.channels * out
        self.channels = out
        return self

    def global_pool(self) -> Hand:
        self.side = 1  # an average: no parameters, no MACs counted
        return self

    def at(self, side: int, channels: int | None = None) -> Hand:
        """The side (and channels) here, as the listing's comment says: the counting itself is checked."""
        assert self.side == side and (channels is None or self.channels == channels), (self.side, self.channels)
        return self

    def inception(self, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> Hand:
        """GoogLeNet's block: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1, every path keeping the side."""
        c_in, area = self.channels, self.side * self.side
        per_pixel = c_in * c1 + c_in * c2[0] + c2[0] * 9 * c2[1] + c_in * c3[0] + c3[0] * 25 * c3[1] + c_in * c4
        self.macs += area * per_pixel
        self.params += per_pixel + c1 + c2[0] + c2[1] + c3[0] + c3[1] + c4  # weights, then one bias per channel
        self.channels = c1 + c2[1] + c3[1] + c4
        return self

    def residual(self, out: int, stride: int = 1) -> Hand:
        """ResNet's unit: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, plus a strided 1x1 conv when
        the shape changes."""
        c_in = self.channels
        self.side = (self.side + 2 - 3) // stride + 1
        shortcut = c_in != out or stride != 1
        per_pixel = c_in * 9 * out + out * 9 * out + (c_in * out if shortcut else 0)
        self.macs += self.side * self.side * per_pixel
        self.params += per_pixel + 2 * out + (out if shortcut else 0) + 2 * 2 * out  # weights, biases, two BNs
        self.channels = out
        return self


def _lenet() -> Hand:
    return (Hand(28).conv(6, 5, pad=2).at(28, 6).pool(2, 2).at(14).conv(16, 5).at(10, 16).pool(2, 2).at(5)
            .flatten().at(1, 400).linear(120).linear(84).linear(10))


def _lenet_bn() -> Hand:
    return (Hand(28).conv(6, 5).bn().at(24, 6).pool(2, 2).at(12).conv(16, 5).bn().at(8, 16).pool(2, 2).at(4)
            .flatten().at(1, 256).linear(120).bn().linear(84).bn().linear(10))


def _lenet_modern() -> Hand:
    return (Hand(28).conv(16, 5, pad=2).at(28).pool(2, 2).bn().at(14, 16).conv(32, 5).at(10).pool(2, 2).bn()
            .at(5, 32).flatten().at(1, 800).linear(128).bn().linear(10))


def _alexnet() -> Hand:
    return (Hand(224).conv(96, 11, stride=4, pad=1).at(54).pool(3, 2).at(26).conv(256, 5, pad=2).at(26)
            .pool(3, 2).at(12).conv(384, 3, pad=1).conv(384, 3, pad=1).conv(256, 3, pad=1).at(12, 256)
            .pool(3, 2).at(5).flatten().at(1, 6400).linear(4096).linear(4096).linear(10))


def _vgg11(width: int) -> Hand:
    """VGG-11: (convs, channels) (1, 64) (1, 128) (2, 256) (2, 512) (2, 512), channels // ``width``."""
    hand = Hand(224)
    for convs, channels in ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)):
        for _ in range(convs):
            hand.conv(channels // width, 3, pad=1)
        hand.pool(2, 2)
    return hand.at(7, 512 // width).flatten().linear(4096).linear(4096).linear(10)


def _nin() -> Hand:
    hand = Hand(224)

    def block(out: int, k: int, stride: int, pad: int) -> Hand:
        return hand.conv(out, k, stride, pad).conv(out, 1).conv(out, 1)

    block(96, 11, 4, 0).at(54)
    hand.pool(3, 2).at(26)
    block(256, 5, 1, 2).at(26)
    hand.pool(3, 2).at(12)
    block(384, 3, 1, 1).at(12)
    hand.pool(3, 2).at(5)
    return block(10, 3, 1, 1).at(5, 10)  # then global average pooling: no parameters, no MACs


def _googlenet() -> Hand:
    hand = Hand(96).conv(64, 7, stride=2, pad=3).at(48).pool(3, 2, 1).at(24)
    hand.conv(64, 1).conv(192, 3, pad=1).pool(3, 2, 1).at(12, 192)
    hand.inception(64, (96, 128), (16, 32), 32).inception(128, (128, 192), (32, 96), 64).pool(3, 2, 1).at(6, 480)
    for c1, c2, c3, c4 in ((192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64),
                           (128, (128, 256), (24, 64), 64), (112, (144, 288), (32, 64), 64),
                           (256, (160, 320), (32, 128), 128)):
        hand.inception(c1, c2, c3, c4)
    hand.pool(3, 2, 1).at(3, 832)
    hand.inception(256, (160, 320), (32, 128), 128).inception(384, (192, 384), (48, 128), 128).at(3, 1024)
    return hand.global_pool().flatten().at(1, 1024).linear(10)


def _resnet18() -> Hand:
    hand = Hand(96).conv(64, 7, stride=2, pad=3).bn().at(48).pool(3, 2, 1).at(24, 64)
    hand.residual(64).residual(64).at(24, 64)
    for channels in (128, 256, 512):
        hand.residual(channels, stride=2).residual(channels)
    return hand.at(3, 512).global_pool().flatten().linear(10)


HAND_COUNTED = {
    "lenet": _lenet, "lenet_bn": _lenet_bn, "lenet_modern": _lenet_modern, "alexnet": _alexnet,
    "vgg11": lambda: _vgg11(1), "vgg11_small": lambda: _vgg11(4), "nin": _nin, "googlenet": _googlenet,
    "resnet18": _resnet18,
}


def test_the_hand_counted_table_covers_every_registered_network() -> None:
    assert sorted(HAND_COUNTED) == sorted(list_models())


def test_lenet_counted_by_hand_is_the_books_arithmetic() -> None:
    """The first rows written out in full: conv 1->6 5x5 pad 2 on 28x28, then 6->16 5x5 on 14x14, then the
    three dense layers."""
    params = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    macs = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert (params, macs) == (61_706, 416_520)  # the README's table
    hand = _lenet()
    assert (hand.params, hand.macs) == (params, macs)


@pytest.mark.parametrize("name", sorted(HAND_COUNTED))
def test_parameters_and_macs_of_every_network_equal_the_hand_count(name: str) -> None:
    hand = HAND_COUNTED[name]()
    summary = summarize_model(name)
    assert summary.total_params == hand.params
    assert summary.total_macs == hand.macs
    assert summary.input_shape == [1, 1, native_size(name), native_size(name)]


# The README's "Models" table (parameters, MACs at the native input), as users read it.
README_MODELS = {
    "lenet": (61_706, 416_520), "alexnet": (46_764_746, 938_146_176), "vgg11": (128_806_154, 7_547_232_256),
    "vgg11_small": (43_093_322, 512_155_648), "nin": (1_992_166, 762_297_352), "googlenet": (5_977_530, 276_066_304),
    "lenet_bn": (44_878, 281_640), "resnet18": (11_178_378, 318_657_536), "lenet_modern": (117_418, 1_697_280),
}


def test_the_readme_models_table_is_the_hand_count() -> None:
    assert {name: (hand().params, hand().macs) for name, hand in HAND_COUNTED.items()} == README_MODELS


# --- what `convzoo summary` prints, character for character (issue 26) ---------------------------------------------

def test_the_lenet_table_as_printed() -> None:
    """Names, types and shapes left-aligned, parameters and MACs right-aligned, two spaces between columns; the
    counts are the hand count above (conv1 6 x (25 + 1), conv2 16 x (150 + 1), 400 x 120 + 120, ...)."""
    assert summarize_model("lenet").format() == "\n".join([
        "lenet: input (1, 1, 28, 28)",
        "layer  type       output shape     params     MACs",
        "0      Conv2d     (1, 6, 28, 28)      156  117,600",
        "1      Sigmoid    (1, 6, 28, 28)        0        0",
        "2      AvgPool2d  (1, 6, 14, 14)        0        0",
        "3      Conv2d     (1, 16, 10, 10)   2,416  240,000",
        "4      Sigmoid    (1, 16, 10, 10)       0        0",
        "5      AvgPool2d  (1, 16, 5, 5)         0        0",
        "6      Flatten    (1, 400)              0        0",
        "7      Linear     (1, 120)         48,120   48,000",
        "8      Sigmoid    (1, 120)              0        0",
        "9      Linear     (1, 84)          10,164   10,080",
        "10     Sigmoid    (1, 84)               0        0",
        "11     Linear     (1, 10)             850      840",
        "total parameters: 61,706",
        "total MACs: 416,520 (FLOPs = 2 x MACs = 833,040)",
    ])


def test_a_summary_with_other_channels_classes_and_side() -> None:
    """BN-LeNet on 3-channel 32x32 images, 7 classes: conv1 3 x 25 products per output (6 x 76 parameters), each
    batch norm 2 parameters per channel."""
    summary = summarize_model("lenet_bn", input_size=32, in_channels=3, num_classes=7)
    assert (summary.model, summary.input_shape) == ("lenet_bn", [1, 3, 32, 32])
    # conv, BN, conv, BN, then each linear and its BN
    assert summary.total_params == (6 * 76 + 12 + 16 * 151 + 32 + 400 * 120 + 120 + 240 + 120 * 84 + 84 + 168
                                    + 84 * 7 + 7)
    assert summary.total_macs == 6 * 28 * 28 * 75 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 7
    assert summary.format().splitlines()[:3] == ["lenet_bn: input (1, 3, 32, 32)",
                                                 "layer  type         output shape     params     MACs",
                                                 "0      Conv2d       (1, 6, 28, 28)      456  352,800"]
    assert summary.to_dict()["layers"][1] == {"name": "1", "type": "BatchNorm2d", "output_shape": [1, 6, 28, 28],
                                              "params": 12, "macs": 0}


def test_the_largest_arguments_are_taken_and_one_more_is_refused_naming_the_flag() -> None:
    largest = summarize_model("lenet", input_size=8192, in_channels=1024, num_classes=1_000_000)
    assert largest.input_shape == [1, 1024, 8192, 8192] and largest.layers[-1].output_shape == [1, 1_000_000]
    for arguments, message in [({"input_size": 8193}, "--input-size must be at most 8,192, got 8,193"),
                               ({"in_channels": 1025}, "--in-channels must be at most 1,024, got 1,025"),
                               ({"num_classes": 1_000_001}, "--num-classes must be at most 1,000,000, got 1,000,001")]:
        with pytest.raises(summary_module.SummaryError) as error:
            summarize_model("lenet", **arguments)
        assert str(error.value) == message


def test_a_summary_of_a_module_on_its_own_device_and_precision() -> None:
    """A network outside the registry runs as it is, in its own dtype, and the name is its class's."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    summary = summarize(net, 6)
    assert (summary.model, summary.input_shape, summary.total_params) == ("Sequential", [1, 1, 6, 6], 20 + 99)
    assert [(r.name, r.params, r.macs) for r in summary.layers] == [("0", 20, 2 * 16 * 9), ("1", 0, 0),
                                                                   ("2", 99, 32 * 3)]
    assert summary.total_macs == 2 * 16 * 9 + 32 * 3
