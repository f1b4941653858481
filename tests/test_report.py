"""report.html: self-contained, built from the run's objects, opened in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

from convzoo import htmlpage
from convzoo.data import CLASSES
from convzoo.evaluate import Evaluation
from convzoo.models import rebuild
from convzoo.report import model_size, report_figures, write_report
from convzoo.train import recipe

SLICE = Path(__file__).parent / "data" / "fashion-mnist-slice"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


class _Page(HTMLParser):
    """Every tag with its attributes, and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def embedded_images(page: _Page) -> list[Image.Image]:
    """Decode every <img> of the page; each must be a PNG data: URI."""
    images = []
    for tag, attrs in page.tags:
        if tag == "img":
            src = attrs["src"] or ""
            assert src.startswith("data:image/png;base64,"), src[:60]
            image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
            image.load()
            images.append(image)
    return images


def assert_not_blank(image: Image.Image) -> None:
    assert np.asarray(image.convert("L"), dtype=np.float64).std() > 15


def test_every_run_writes_a_self_contained_report(run: Path) -> None:
    report = run / "report.html"
    page = parse(report)
    images = embedded_images(page)
    assert len(images) == 4  # curves, confusion matrix, kernels, mistakes
    for image in images:
        assert image.format == "PNG" and min(image.size) > 150
        assert_not_blank(image)
    # Nothing to fetch and nothing to run: no scripts, no links, no external URLs.
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object")]
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html) and "url(" not in html
    text = " ".join(page.text)
    assert all(name in text for name in CLASSES)
    result = json.loads((run / "result.json").read_text())
    assert f"{result['test_acc']:.4f}" in text and "adamw" in text and "61,706" in text  # LeNet's parameters
    metrics_rows = [attrs for tag, attrs in page.tags if tag == "tr"]
    assert len(metrics_rows) > 1 + 10  # header + an epoch row, per-class rows, settings...
    for name in ("curves.png", "confusion.png", "kernels.png", "mistakes.png"):
        assert (run / name).is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it with apt-get)")
def test_report_opens_in_a_browser(run: Path, tmp_path: Path) -> None:
    # The report has no script; a copy gets one that counts the images the browser decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(run.joinpath("report.html").read_text().replace("</body>", """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.setAttribute("data-images", document.images.length);
  document.body.setAttribute("data-broken", broken);
});
</script></body>"""))

    def chromium(*args: str, url: Path) -> subprocess.CompletedProcess[str]:
        profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url.as_uri()],
                              capture_output=True, text=True, timeout=120)

    proc = chromium("--enable-logging=stderr", "--v=0", "--dump-dom", url=probe)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    assert 'data-images="4"' in body and 'data-broken="0"' in body, body
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console

    shot = tmp_path / "report.png"
    proc = chromium(f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars", url=run / "report.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 2000)
        assert_not_blank(image)


def test_report_command_regenerates_it_and_leaves_the_pictures_show_drew(
        run: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    (run / "report.html").unlink()
    (run / "mistakes.png").unlink()
    code, _, err = run_cli("show", "kernels", str(run), "--layer", "3")  # another layer than the report's
    assert code == 0, err
    kernels = (run / "kernels.png").read_bytes()
    code, out, _ = run_cli("report", str(run), "--device", "cpu", "--data-dir", str(SLICE))
    assert code == 0 and out.strip() == f"wrote {run / 'report.html'}"
    assert len(embedded_images(parse(run / "report.html"))) == 4
    assert not (run / "mistakes.png").exists() and (run / "kernels.png").read_bytes() == kernels


@pytest.mark.parametrize("command, message", [
    ("report", "not a convzoo run directory"),
    ("compare", "not a convzoo run directory"),
])
def test_missing_run_directory_is_one_line(command: str, message: str, tmp_path: Path,
                                           run_cli: Callable[..., tuple[int, str, str]]) -> None:
    out = tmp_path / "page.html"
    args = [command, str(tmp_path / "nowhere")] + (["--out", str(out)] if command == "compare" else [])
    code, _, err = run_cli(*args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()




# --- the numbers the pages show, read back ----------------------------------------------------

class Structure(HTMLParser):
    """A page as a reader sees it: its tables (rows of cell texts), cards ({label: value}), images
    (alt texts) and links ((href, text))."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cards: dict[str, str] = {}
        self.images: list[str] = []
        self.links: list[tuple[str, str]] = []
        self._cell: list[str] | None = None
        self._card: dict[str, str] | None = None
        self._inside: list[str] = []
        self._href: str | None = None
        self._link_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._inside.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "div" and a.get("class") == "card":
            self._card = {}
        elif tag == "img":
            self.images.append(a.get("alt") or "")
            self._inside.pop()  # a void element
        elif tag == "a":
            self._href, self._link_text = a.get("href"), []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "div" and self._card is not None and "b" in self._card:
            self.cards[self._card.get("span", "")] = self._card["b"]
            self._card = None
        elif tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._link_text)))
            self._href = None
        if self._inside and self._inside[-1] == tag:
            self._inside.pop()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._card is not None and self._inside and self._inside[-1] in ("b", "span"):
            self._card[self._inside[-1]] = self._card.get(self._inside[-1], "") + data
        if self._href is not None:
            self._link_text.append(data)


def structure(path: Path) -> Structure:
    page = Structure()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def shown(cell: str, value: float) -> bool:
    """Whether a table cell shows ``value`` (the pages round to 4 decimals, or 4 significant digits)."""
    return float(cell.replace(",", "")) == pytest.approx(value, rel=5e-4, abs=5e-5)


def test_the_report_shows_the_runs_own_numbers_and_pictures(
        run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    copy = tmp_path / "lenet"
    shutil.copytree(run, copy)
    (copy / "report.html").unlink()
    code, _, err = run_cli("report", str(copy), "--device", "cpu", "--data-dir", str(SLICE))
    assert code == 0, err
    page = structure(copy / "report.html")
    result = json.loads((copy / "result.json").read_text())
    metrics = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((copy / "config.json").read_text())["config"]

    cards = page.cards
    assert cards["test accuracy"] == f"{result['test_acc']:.4f}"
    assert cards["epochs"] == f"{result['epochs']} of {config['epochs']}" == f"{len(metrics)} of 1"
    assert cards["test images"] == f"{config['limit_test']:,}" == "200"
    assert (cards["parameters"], cards["MACs / image"], cards["input"]) == ("61,706", "416,520", "28\u00d728")
    train = sum(row["seconds"] + row.get("eval_seconds", 0) for row in metrics)
    assert cards["train time"] == f"{train:.1f} s"

    # The metrics table: one row per line of metrics.jsonl, one column per key, in the file's order.
    (history,) = [t for t in page.tables if t[0] == list(metrics[0])]
    assert len(history) == 1 + len(metrics)
    for row, cells in zip(metrics, history[1:], strict=True):
        for key, cell in zip(row, cells, strict=True):
            assert shown(cell, row[key]), (key, cell, row[key])
    assert shown(history[1][list(metrics[0]).index("test_acc")], result["test_acc"])

    # Per-class accuracy: every class in the data set's order, the values result.json keeps.
    (per_class,) = [t for t in page.tables if t[0][:2] == ["class", "accuracy"]]
    assert [cells[0] for cells in per_class[1:]] == list(CLASSES)
    assert [cells[1] for cells in per_class[1:]] == [f"{result['per_class_accuracy'][c]:.4f}" for c in CLASSES]

    # The settings table shows config.json's values.
    (settings,) = [t for t in page.tables if t[0] == ["setting", "value"]]
    values = {cells[0]: cells[1] for cells in settings[1:]}
    assert (values["model"], values["optimizer"], values["batch_size"], values["limit_test"]) == \
        ("lenet", "adamw", "32", "200")
    assert shown(values["lr"], config["lr"])

    # The four pictures, named after the run; nothing else is referenced.
    assert page.images == [f"{name} of lenet" for name in ("curves", "confusion", "kernels", "mistakes")]
    assert page.links == []


# --- the pieces of a page (convzoo.htmlpage) -----------------------------------------------------

def test_numbers_as_the_pages_show_them() -> None:
    n = htmlpage.number
    assert [n(v) for v in (0.5, 0.12345, 2.0, 0.001, 99999.0, 12345.678)] == \
        ["0.5", "0.1235", "2", "0.001", "99999", "12345.678"]
    assert [n(v) for v in (0.0, 0.00012345, -0.00012345, 100000.0, -250000.0, 1e-9)] == \
        ["0", "0.0001234", "-0.0001234", "1e+05", "-2.5e+05", "1e-09"]
    assert [n(v) for v in (-0.5, -3.25)] == ["-0.5", "-3.25"]
    assert [n(v) for v in (1234567, 0, True, None, "a<b")] == ["1,234,567", "0", "True", "None", "a<b"]


def test_seconds_as_the_pages_show_them() -> None:
    s = htmlpage.seconds
    assert [s(v) for v in (0.04, 3.25, 119.9, 120.0, 150.0, 3600.0)] == \
        ["0.0 s", "3.2 s", "119.9 s", "2.0 min", "2.5 min", "60.0 min"]


def test_a_table_aligns_names_left_and_escapes_cells() -> None:
    assert htmlpage.table(["a<", "b"], [["x&", 1], ["y", "<i>"]], left=1) == (
        "<table>\n<tr><th class=l>a&lt;</th><th>b</th></tr>\n"
        "<tr><td class=l>x&amp;</td><td>1</td></tr>\n<tr><td class=l>y</td><td>&lt;i&gt;</td></tr>\n</table>")
    assert htmlpage.table(["<h>"], [["<b>x</b>"]], left=0, escape=False) == \
        "<table>\n<tr><th>&lt;h&gt;</th></tr>\n<tr><td><b>x</b></td></tr>\n</table>"
    assert htmlpage.table(["a", "b", "c"], [[1, 2, 3]]).count("class=l") == 2  # one column by default


def test_a_page_and_an_image() -> None:
    assert htmlpage.img(b"\x89PNG", 'a "b"') == '<img src="data:image/png;base64,iVBORw==" alt="a &quot;b&quot;">'
    html = htmlpage.page("<t>", "<p>body</p>")
    assert html.startswith('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                           '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                           "<title>&lt;t&gt;</title>\n<style>\nbody { font: 15px/1.45 system-ui, sans-serif;")
    assert html.endswith("}\n</style>\n</head>\n<body>\n<main>\n<p>body</p>\n</main>\n</body>\n</html>\n")
    assert htmlpage.esc("<&>") == "&lt;&amp;&gt;"


# --- a run made by hand: every number and name of its page -----------------------------------------

HAND_CLASSES = ("zero", "one <1>", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def hand_run(run_dir: Path, history: list[dict], *, meta: dict | None = None) -> SimpleNamespace:
    """A run of 8 test images, made by hand: class 0 right 3 of 4, class 1 1 of 2, class 2 2 of 2, no image of
    the other seven classes; accuracy 6/8."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predictions = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    confusion = np.zeros((10, 10), dtype=np.int64)
    for t, p in zip(labels.tolist(), predictions.tolist()):
        confusion[t, p] += 1
    evaluation = Evaluation(accuracy=0.75, loss=0.5, confusion=confusion, predictions=predictions, labels=labels,
                            losses=torch.linspace(0.1, 0.8, 8), confidences=torch.full((8,), 0.6))
    model_config = {"name": "lenet", "num_classes": 10}
    torch.manual_seed(0)
    meta = {"model": model_config, "versions": {"convzoo": "9.9", "torch": "t<1>"}, "device": "cpu",
            "device_name": "A CPU", "created": "2026-01-02T03:04:05+00:00", "command": "convzoo train lenet <x>",
            **(meta or {})}
    config = recipe("lenet", epochs=3, lr=0.0025, batch_size=64, val_fraction=0.1)
    meta["config"] = config
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    run_dir.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(run_dir=run_dir, config=config, meta=meta, history=history, evaluation=evaluation,
                           classes=HAND_CLASSES, model=rebuild(model_config), images=images, labels=labels)


HISTORY = [
    {"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "val_acc": 0.55, "lr": 0.0025, "seconds": 2.0,
     "examples_per_sec": 1234.5, "eval_seconds": 0.5},
    {"epoch": 2, "train_loss": 0.75, "train_acc": 0.7, "val_acc": 0.6125, "lr": 0.00125, "seconds": 100.0,
     "examples_per_sec": 2000.0, "eval_seconds": 30.0},
]


@pytest.fixture
def quick_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each picture's PNG is a stand-in holding its figure's texts (drawing them takes seconds)."""
    import convzoo.report

    monkeypatch.setattr(convzoo.report, "figure_png", lambda figure: "\n".join(["\x89PNG", *texts(figure)]).encode())


def texts(figure) -> list[str]:
    return [t.get_text() for t in figure.findobj(Text) if t.get_text()]


def test_the_report_shows_a_run_made_by_hand(tmp_path: Path, quick_pictures: None) -> None:
    run = hand_run(tmp_path / "my run", HISTORY)
    path = write_report(run)
    assert path == tmp_path / "my run" / "report.html"
    assert not list((tmp_path / "my run").glob("*.png"))  # no pictures unless asked
    page = structure(path)
    assert page.cards == {"test accuracy": "0.7500", "validation accuracy (last epoch)": "0.6125",
                          "epochs": "2 of 3", "train time": "2.2 min", "parameters": "61,706",
                          "MACs / image": "416,520", "input": "28\u00d728", "test images": "8"}
    assert list(page.cards)[:2] == ["test accuracy", "validation accuracy (last epoch)"]
    history, per_class, confused, settings, environment = page.tables
    assert history == [list(HISTORY[0]), ["1", "1.5", "0.4", "0.55", "0.0025", "2", "1234.5", "0.5"],
                       ["2", "0.75", "0.7", "0.6125", "0.0013", "100", "2000", "30"]]
    assert per_class[0] == ["class", "accuracy", ""]
    assert per_class[1:] == [["zero", "0.7500", ""], ["one <1>", "0.5000", ""], ["two", "1.0000", ""]] + \
        [[name, "\u2013", ""] for name in HAND_CLASSES[3:]]
    assert confused == [["true class", "taken for", "test images"], ["zero", "one <1>", "1"], ["one <1>", "two", "1"]]
    values = dict(settings[1:])
    assert settings[0] == ["setting", "value"]
    assert (values["model"], values["epochs"], values["lr"], values["val_fraction"], values["batch_size"]) == \
        ("lenet", "3", "0.0025", "0.1", "64")
    assert (values["model.num_classes"], "model.name" in values) == ("10", False)
    assert environment == [["environment", ""], ["convzoo", "9.9"], ["torch", "t<1>"], ["device", "cpu (A CPU)"],
                           ["created", "2026-01-02T03:04:05+00:00"]]
    html = path.read_text()
    assert '<span class="bar" style="width:120px"></span>' in html and 'style="width:80px"' in html
    assert 'style="width:160px"' in html and html.count('class="bar"') == 3
    assert "<td class=l>zero</td><td>0.7500</td><td class=l><span" in html
    assert "<td class=l>three</td><td>\u2013</td><td class=l></td>" in html
    assert "<td class=l>zero</td><td class=l>one &lt;1&gt;</td><td>1</td>" in html
    assert "<tr><th>epoch</th><th>train_loss</th>" in html  # the metrics table: numbers, right-aligned
    assert "<td class=l>lr</td><td class=l>0.0025</td>" in html
    assert "<title>lenet run my run</title>" in html
    assert '<h1>lenet \u00b7 d2l recipe</h1>\n<p class="sub">run <code>my run</code> \u00b7 command ' \
           "<code>convzoo train lenet &lt;x&gt;</code></p>" in html
    assert [h for h in ("<h2>Training curves</h2>", "<h2>Test set</h2>", "<h2>Kernels of the first convolution</h2>",
                        "<h2>Mistakes</h2>", "<h2>Configuration</h2>") if h in html] == [
        "<h2>Training curves</h2>", "<h2>Test set</h2>", "<h2>Kernels of the first convolution</h2>",
        "<h2>Mistakes</h2>", "<h2>Configuration</h2>"]
    assert page.images == [f"{name} of my run" for name in ("curves", "confusion", "kernels", "mistakes")]


def test_a_report_without_a_validation_split_or_a_record_of_its_machine(tmp_path: Path,
                                                                         quick_pictures: None) -> None:
    history = [{"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "test_acc": 0.5, "seconds": 119.0,
                "eval_seconds": 0.9}]
    run = hand_run(tmp_path / "r", history, meta={"model": {"name": "lenet", "num_classes": 10, "in_channels": 1}})
    del run.meta["versions"], run.meta["device"], run.meta["device_name"], run.meta["created"], run.meta["command"]
    run.evaluation.confusion[:] = 0
    for i in range(10):
        run.evaluation.confusion[i, i] = 1
    path = write_report(run, pictures=True)
    page = structure(path)
    assert list(page.cards) == ["test accuracy", "epochs", "train time", "parameters", "MACs / image", "input",
                                "test images"]
    assert page.cards["train time"] == "119.9 s"
    assert page.tables[-1] == [["environment", ""], ["device", "? (?)"], ["created", "?"]]
    assert '<code></code></p>' in path.read_text() and "taken for" not in path.read_text()
    assert sorted(p.name for p in path.parent.glob("*.png")) == ["confusion.png", "curves.png", "kernels.png",
                                                                  "mistakes.png"]
    sources = [attrs["src"] for tag, attrs in parse(path).tags if tag == "img"]
    assert [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in sources] == \
        [(path.parent / f"{name}.png").read_bytes() for name in ("curves", "confusion", "kernels", "mistakes")]
    assert b"\nlenet: test accuracy 0.7500\n" in (path.parent / "confusion.png").read_bytes()


def test_the_report_figures_are_titled_after_the_run(tmp_path: Path) -> None:
    run = hand_run(tmp_path / "r", HISTORY)
    figures = report_figures(run)
    assert list(figures) == ["curves", "confusion", "kernels", "mistakes"]
    assert "lenet" in texts(figures["curves"])
    assert "lenet: test accuracy 0.7500" in texts(figures["confusion"]) and "one <1>" in texts(figures["confusion"])
    assert "lenet: kernels of" in " ".join(texts(figures["kernels"]))
    mistakes = texts(figures["mistakes"])
    assert "lenet: 2 of 8 test images misclassified (by loss, highest first)" in mistakes
    assert "pred: two 60%" in mistakes and "true: one <1>" in mistakes  # the run's class names, its confidences
    assert mistakes.index("true: one <1>") < mistakes.index("true: zero")  # the highest loss first
    run.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    assert list(report_figures(run)) == ["curves", "confusion", "mistakes"]


def test_model_size_counts_the_runs_input_channels() -> None:
    config = recipe("lenet")
    assert model_size({"config": config, "model": {"name": "lenet", "num_classes": 10}}) == (61_706, 416_520)
    assert model_size({"config": config, "model": {"name": "lenet", "num_classes": 10, "in_channels": 3}}) == \
        (62_006, 651_720)


def test_the_report_names_the_five_most_confused_pairs_and_every_metric(tmp_path: Path, quick_pictures: None) -> None:
    history = [{"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "test_acc": 0.5, "seconds": 1.0},
               {"epoch": 2, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.625, "seconds": 1.0, "lr": 0.5}]
    run = hand_run(tmp_path / "r", history)
    confusion = np.diag(np.full(10, 5000))
    for (t, p), n in {(0, 6): 1200, (6, 0): 900, (2, 4): 900, (4, 2): 30, (7, 9): 3, (9, 7): 2, (8, 0): 1}.items():
        confusion[t, p] = n
    run.evaluation.confusion = confusion
    page = structure(write_report(run))
    confused = next(t for t in page.tables if t[0] == ["true class", "taken for", "test images"])
    assert confused[1:] == [["zero", "six", "1,200"], ["two", "four", "900"], ["six", "zero", "900"],
                            ["four", "two", "30"], ["seven", "nine", "3"]]
    metrics = page.tables[0]
    assert metrics == [["epoch", "train_loss", "train_acc", "test_acc", "seconds", "lr"],
                       ["1", "1.5", "0.4", "0.5", "1", ""], ["2", "1", "0.5", "0.625", "1", "0.5"]]
