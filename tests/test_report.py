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


