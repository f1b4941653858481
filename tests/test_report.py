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

import numpy as np
import pytest
from PIL import Image

from convzoo.data import CLASSES

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
