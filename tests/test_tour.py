"""docs/tour.md: every code block prints what the page shows, as a page and as a notebook; its pictures are drawn.

The page runs once per session in a temporary directory (its pictures and runs land there, not in
docs/); the notebook made from it runs in another, in a Jupyter kernel.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import tour_runner  # noqa: E402  (tools/: the runner is also the Makefile's tour-notebook)

DOCS = Path(__file__).parent.parent / "docs"
PAGE = DOCS / "tour.md"
PICTURE = re.compile(r"!\[[^\]]*\]\((tour/[^)]+\.png)\)")


@pytest.fixture(scope="module")
def page_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The page run in a fresh directory: that directory and the failures."""
    where = tmp_path_factory.mktemp("tour")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        failures = tour_runner.run(PAGE)
    return where, failures


def test_every_block_prints_what_the_page_shows(page_run: tuple[Path, list]) -> None:
    _, failures = page_run
    if failures:
        pytest.fail(tour_runner.describe(failures), pytrace=False)


def picture_links() -> list[str]:
    return PICTURE.findall(PAGE.read_text())


def assert_picture(path: Path) -> tuple[int, int]:
    """``path`` is a PNG that is not blank; returns its size."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
        size = image.size
    assert min(size) >= 100, f"{path.name} is only {size}"
    assert pixels.std() > 10, f"{path.name} looks blank"
    return size


def test_the_pages_pictures_are_drawn_by_it(page_run: tuple[Path, list]) -> None:
    where, _ = page_run
    links = picture_links()
    assert len(links) >= 4
    for link in links:
        drawn, committed = where / link, DOCS / link
        assert drawn.is_file(), f"the page links {link} but does not draw it"
        assert committed.is_file(), f"{link} is not in docs/ (make tour-pictures)"
        assert assert_picture(drawn) == assert_picture(committed), f"{link} changed size (make tour-pictures)"
    unlinked = {f"tour/{p.name}" for p in (DOCS / "tour").glob("*.png")} - set(links)
    assert not unlinked, f"pictures in docs/tour/ that the page does not show: {sorted(unlinked)}"


def test_the_pages_links_to_its_sections_resolve() -> None:
    """Every ``](#anchor)`` names a heading, with the anchors GitHub makes (lower case, punctuation dropped)."""
    text = PAGE.read_text()
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert len(links) >= 19
    assert not links - anchors, f"links to no heading: {sorted(links - anchors)}"


def test_blocks_and_their_outputs_are_paired() -> None:
    text = "\n".join([
        "Prose.", "```python", "print(1 + 1)", "```", "", "```text", "2", "```",
        "```sh", "echo hi", "```", "```text +NUMBER", "0.71", "```", "```python", "x = 1", "```", "More prose.",
        "```text", "a text block after prose is shown, not compared", "```",
    ])
    blocks = tour_runner.blocks(text)
    assert [(b.language, b.source, b.want, b.line) for b in blocks] == [
        ("python", "print(1 + 1)\n", "2\n", 2), ("sh", "echo hi\n", "0.71\n", 9), ("python", "x = 1\n", "", 15)]
    assert tour_runner.compare(blocks[0], "2\n") is None
    assert "Expected:" in tour_runner.compare(blocks[0], "3\n")
    assert tour_runner.compare(blocks[1], "0.7049\n") is None  # +NUMBER: to the precision shown
    assert tour_runner.compare(blocks[1], "0.69\n") is not None
    assert tour_runner.compare(blocks[2], "") is None
    assert tour_runner.compare(blocks[2], "surprise\n") is not None  # no output shown: none printed


def test_a_wrong_output_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 6 * 7\nprint(x)\n```\n\n```text\n42\n```\n\n"  # lines 1-8
                    "```python\nprint(x + 1)\n```\n\n```text\n44\n```\n\n"  # lines 10-16: wrong
                    "```sh\necho hi > said.txt\n```\n\n```sh\ncat said.txt\n```\n\n```text\nhi\n```\n"
                    "```python\nx\n```\n")  # line 29: a bare value shows, as in a notebook
    monkeypatch.chdir(tmp_path)
    failures = tour_runner.run(page)
    assert [example.line for example, _ in failures] == [10, 29]
    assert "Expected:\n    44\nGot:\n    43" in tour_runner.describe(failures)
    assert "Got:\n    42" in tour_runner.describe(failures)


def test_the_notebook_prints_what_the_page_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    nb = tour_runner.notebook(PAGE)
    blocks = tour_runner.blocks(PAGE.read_text())
    cells = tour_runner.page_cells(nb)
    assert [tour_runner.cell_output(cell) for cell in cells] == [block.want for block in blocks]
    assert not any("```text" in cell.source for cell in nb.cells)  # the outputs moved into the code cells

    # The kernel runs this interpreter (jupyter_client's native kernel) from a shell where its
    # environment is not activated (its bin is not on the PATH: the notebook's first cell puts it
    # there for the %%sh cells), and keeps its files out of the user's home.
    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                               if p and p != bin_dir) or os.defpath)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    work = tmp_path / "work"
    work.mkdir()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()

    mismatches = []
    for cell, block in zip(cells, blocks, strict=True):
        difference = tour_runner.compare(block, tour_runner.cell_output(cell))
        if difference:
            mismatches.append(f"the cell of the block at line {block.line}:\n{difference}")
    if mismatches:
        pytest.fail("\n\n".join(mismatches), pytrace=False)
    for link in picture_links():
        assert_picture(work / link)


def test_the_notebook_finds_convzoo_with_nothing_activated_and_shows_live_plots(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first code cell puts the kernel's bin first on the PATH (the %%sh cells run convzoo from there);
    its training calls show their progress (the page's own run turns it off)."""
    nb = tour_runner.notebook(PAGE)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code[0].metadata["tags"] == [tour_runner.SETUP_TAG]
    assert code[1:] == tour_runner.page_cells(nb)
    assert len(code) == len(tour_runner.blocks(PAGE.read_text())) + 1
    assert code.index(next(cell for cell in code if cell.source.startswith("%%sh"))) > 0
    monkeypatch.setenv("PATH", "/nowhere")
    exec(code[0].source, {})  # what the kernel runs first
    assert os.environ["PATH"] == f"{Path(sys.executable).parent}{os.pathsep}/nowhere"
    assert "progress=False" in PAGE.read_text()
    assert not any("progress=False" in cell.source for cell in code)
    assert any("fit(config" in cell.source for cell in code)
