"""convzoo explore in a real browser: the system's Chromium driven by Playwright.

Each test opens the printed address (the secret becomes a cookie), works the page as a person
would and checks what it shows against the library: convzoo.ops for the operations, the run's
own prediction for a test image, new feature maps after a stroke; no console errors; a
screenshot that is not blank. ``CONVZOO_EXPLORE_SCREENSHOTS=1`` also writes the screenshots to
docs/explore/ (the README's pictures); ``CONVZOO_EXPLORE_RUN=DIR`` shows that run instead of the
tiny one (the README's screenshots show a 3-epoch LeNet).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageStat

pytest.importorskip("starlette", reason="needs the explore extra (pip install 'convzoo[explore]')")
pytest.importorskip("captum", reason="needs the explore extra (pip install 'convzoo[explore]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")

from convzoo import api, ops  # noqa: E402
from convzoo.data import load_split  # noqa: E402
from convzoo.explore import ExplorerServer  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "explore"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM} (apt install chromium)")


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    return Path(os.environ.get("CONVZOO_EXPLORE_RUN") or tiny_run)


@pytest.fixture(scope="module")
def server(run_dir, one_thread):
    explorer = ExplorerServer(api.load(run_dir, "cpu")).start()
    yield explorer
    explorer.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    home = tmp_path_factory.mktemp("chromium-home")  # the browser's profile and caches stay in tmp
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(home / "no-download"))  # the system's Chromium, no download
        patch.setenv("TMPDIR", str(home))  # the driver's and the browser's temporary files too
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS,
                                                  env={**os.environ, "HOME": str(home)})
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(20_000)
    page.goto(server.address)
    page.wait_for_selector("body[data-ready='1']")
    assert page.url == server.url  # the secret left the address bar once it became a cookie
    yield page
    context.close()
    assert errors == []


def screenshot(page, tmp_path: Path, name: str) -> None:
    data = page.screenshot(full_page=False)
    (tmp_path / name).write_bytes(data)
    image = Image.open(io.BytesIO(data)).convert("L")
    assert max(ImageStat.Stat(image).stddev) > 20, f"{name} looks blank"
    if os.environ.get("CONVZOO_EXPLORE_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, DOCS / name)


def wait_until(page, predicate: str, arg: object = None, timeout: float = 20.0) -> None:
    """Poll ``predicate`` (a JavaScript function of ``arg``) until true; ``page.wait_for_function``
    evaluates its predicate with ``eval``, which the page's Content-Security-Policy forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate, arg):
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        page.wait_for_timeout(50)


def set_number(page, selector: str, value: int) -> None:
    page.fill(selector, str(value))
    page.locator(selector).blur()  # a number field reports its change when it loses the focus


def test_an_edited_kernel_with_padding_1_and_stride_2_shows_what_corr2d_gives(page, tmp_path):
    page.click("#tab-ops")
    page.click("#preset-edge")
    set_number(page, "#k-h", 3)
    set_number(page, "#k-w", 3)
    kernel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.5, -2.0], [1.0, 0.0, -1.5]])
    cells = page.locator("#ops-kernel input")
    for n, value in enumerate(kernel.flatten().tolist()):
        cells.nth(n).fill(str(value))
    set_number(page, "#padding", 1)
    set_number(page, "#stride", 2)
    x = torch.tensor([[1.0, 1, 0, 0, 0, 0, 1, 1]] * 6)
    expected = ops.corr2d(F.pad(x, (1, 1, 1, 1)), kernel)[::2, ::2]
    wait_until(
        page, """expected => {
          const rows = [...document.querySelectorAll('#ops-output table tr')];
          return rows.length === expected.length && rows.every((tr, i) => tr.children.length === expected[i].length
            && [...tr.children].every((td, j) => Math.abs(+td.dataset.value - expected[i][j]) < 1e-9));
        }""", expected.tolist())
    assert "/ 2\u230b + 1 = 3" in page.inner_text("#ops-formula")  # H_out = floor((6 + 2 - 3) / 2) + 1
    page.click("#ops-output td[data-row='1'][data-col='2']")
    window = page.locator("#ops-input td.window")
    assert window.count() == 9  # rows 1..3, columns 3..5 of the input
    assert {(int(window.nth(n).get_attribute("data-row")), int(window.nth(n).get_attribute("data-col")))
            for n in range(9)} == {(r, c) for r in (1, 2, 3) for c in (3, 4, 5)}
    screenshot(page, tmp_path, "operations.png")


def test_a_dropped_image_file_shows_what_convzoo_predict_says_for_it(page, run_dir, tmp_path):
    run = api.load(run_dir, "cpu")
    path = tmp_path / "test-image-40.png"
    Image.fromarray(load_split("test", run.config.data_dir)[0][40].numpy()).save(path)
    expected = run.predict(str(path), top_k=5)[0]
    page.wait_for_selector("body[data-analyses='1']")
    page.evaluate("""bytes => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "test-image-40.png", { type: "image/png" }));
        document.querySelector("#draw").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
    }""", list(path.read_bytes()))
    page.wait_for_selector("body[data-analyses='2']")
    assert int(page.get_attribute("#top", "data-label")) == expected.label
    assert page.inner_text("#top li:first-child").startswith(f"{expected.class_name} {expected.probability:.1%}")


def test_a_test_image_shows_the_runs_prediction_and_a_stroke_updates_the_maps(page, run_dir, tmp_path):
    run = api.load(run_dir, "cpu")
    images, _ = load_split("test", run.config.data_dir)
    expected = run.predict(images[12:13], top_k=5)[0]
    page.wait_for_selector("body[data-analyses='1']")  # test image 0, shown when the page opens
    set_number(page, "#test-index", 12)
    page.wait_for_selector("body[data-analyses='2']")
    assert int(page.get_attribute("#top", "data-label")) == expected.label
    assert page.inner_text("#top li:first-child").startswith(f"{expected.class_name} {expected.probability:.1%}")
    wait_until(page, "() => +document.body.dataset.explained >= 2")  # the top class's Grad-CAM map follows
    assert page.inner_text("#saliency-class") == expected.class_name
    names = [page.locator("#layers .layer").nth(n).get_attribute("data-layer") for n in range(4)]
    assert names == ["0", "2", "3", "5"]
    page.locator("#layers .layer canvas").nth(3).click(position={"x": 32, "y": 32})
    assert "input rows" in page.inner_text("#field-text")
    screenshot(page, tmp_path, "run.png")

    before = page.evaluate("document.querySelector('#layers canvas').toDataURL()")
    box = page.locator("#draw").bounding_box()
    page.click("#clear")
    page.wait_for_selector("body[data-analyses='3']")
    page.mouse.move(box["x"] + 80, box["y"] + 60)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + 80 + 12 * step, box["y"] + 60 + 15 * step)
    page.mouse.up()
    wait_until(page, "() => +document.body.dataset.analyses >= 4")
    page.wait_for_timeout(300)  # the debounced last update
    after = page.evaluate("document.querySelector('#layers canvas').toDataURL()")
    assert after != before
