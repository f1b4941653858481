"""`convzoo compare`: the table, the settings that differ, the page with links to each run's report."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from convzoo.compare import compare_runs, differing_settings, format_table
from convzoo.summary import summarize_model
from test_report import assert_not_blank, embedded_images, parse


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> Path:
    return tiny_run


def test_compare_runs(run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    # A copy whose results differ, so that each row must come from its own run.
    other = tmp_path / "lenet-copy"
    shutil.copytree(run, other)
    result = json.loads((run / "result.json").read_text())
    (other / "result.json").write_text(json.dumps({**result, "test_acc": 0.5, "train_seconds": 12.5}))
    page = tmp_path / "compare.html"
    code, out, _ = run_cli("compare", str(run), str(other), "--out", str(page), "--json")
    assert code == 0
    line = json.loads(out.strip().splitlines()[-1])
    assert line["out"] == str(page) and [r["run"] for r in line["runs"]] == ["lenet", "lenet-copy"]
    summary = summarize_model("lenet")
    for row in line["runs"]:
        assert (row["model"], row["recipe"], row["input_size"], row["epochs"]) == ("lenet", "d2l", 28, 1)
        assert (row["params"], row["macs"]) == (summary.total_params, summary.total_macs)
    assert [(r["test_acc"], r["train_seconds"]) for r in line["runs"]] == [
        (result["test_acc"], result["train_seconds"]), (0.5, 12.5)]
    images = embedded_images(parse(page))
    assert len(images) == 1
    assert_not_blank(images[0])

    code, out, _ = run_cli("compare", str(run), str(other), "--out", str(page))
    assert code == 0
    header, *rows, wrote = out.strip().splitlines()
    assert header.split()[:3] == ["run", "model", "recipe"] and len(rows) == 2 and wrote == f"wrote {page}"
    assert rows[0].split()[:3] == ["lenet", "lenet", "d2l"] and f"{result['test_acc']:.4f}" in rows[0]
    assert rows[1].split()[:3] == ["lenet-copy", "lenet", "d2l"] and "0.5000" in rows[1]


def test_compare_refuses_an_unfinished_run(
    run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "result.json").unlink()
    code, _, err = run_cli("compare", str(run), str(unfinished), "--out", str(tmp_path / "c.html"))
    assert code == 2 and "has no result.json" in err and "--resume" in err
    assert not (tmp_path / "c.html").exists()


def reseeded(run: Path, tmp_path: Path, name: str, seed: int) -> Path:
    """A copy of ``run`` whose config.json says another seed (what differs between two runs)."""
    other = tmp_path / name
    shutil.copytree(run, other)
    meta = json.loads((other / "config.json").read_text())
    meta["config"]["seed"] = seed
    (other / "config.json").write_text(json.dumps(meta))
    return other


def test_the_settings_that_differ(run: Path, tmp_path: Path) -> None:
    other = reseeded(run, tmp_path, "other", 7)
    assert differing_settings([run, other]) == {"seed": [0, 7]}
    assert differing_settings([run, run]) == {}


def test_the_page_links_each_report_and_shows_the_differences(run: Path, tmp_path: Path,
                                                               run_cli: Callable[..., tuple[int, str, str]]) -> None:
    other = reseeded(run, tmp_path, "other", 7)
    page = tmp_path / "pages" / "compare.html"
    code, _, err = run_cli("compare", str(run), str(other), "--out", str(page))
    assert code == 0, err
    tags = parse(page).tags
    links = [attrs["href"] for tag, attrs in tags if tag == "a"]
    assert len(links) == 2 and all((page.parent / link).resolve().name == "report.html" for link in links)
    assert (page.parent / links[1]).resolve() == (other / "report.html").resolve()
    text = "".join(parse(page).text)
    assert "Settings that differ" in text and "seed" in text and "test accuracy" in text and "test_acc" not in text


def test_the_text_table_stays_aligned_with_long_names(run: Path, tmp_path: Path) -> None:
    long = tmp_path / ("a-run-with-a-very-long-name-" * 3)
    shutil.copytree(run, long)
    lines = format_table(compare_runs([run, long])).splitlines()
    assert len({len(line) for line in lines}) == 1  # every line as wide: the columns line up


def test_json_alone_writes_no_page(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   run_cli: Callable[..., tuple[int, str, str]]) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("compare", str(run), "--json")
    assert code == 0 and json.loads(out)["out"] is None
    assert not (tmp_path / "compare.html").exists()


def test_the_compare_page_shows_each_runs_result_and_links_its_report(
        run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    from test_report import shown, structure

    # A second run whose result and history differ from the first, and which has no report.
    other = tmp_path / "runs" / "second"
    shutil.copytree(run, other)
    (other / "report.html").unlink()
    result = json.loads((run / "result.json").read_text())
    (other / "result.json").write_text(json.dumps({**result, "test_acc": 0.8125, "train_seconds": 12.25,
                                                   "epochs": 3}))
    page_path = tmp_path / "pages" / "compare.html"
    code, _, err = run_cli("compare", str(run), str(other), "--out", str(page_path))
    assert code == 0, err
    page = structure(page_path)

    runs_table = page.tables[0]
    assert runs_table[0] == ["run", "model", "recipe", "input", "parameters", "MACs / image", "epochs",
                             "train time (s)", "train ex/s", "test images", "test accuracy", "ran with"]
    first, second = runs_table[1:]
    assert first[:7] == [run.name, "lenet", "d2l", "28", "61,706", "416,520", str(result["epochs"])]
    assert shown(first[7], result["train_seconds"]) and shown(first[10], result["test_acc"])
    assert second[:7] == ["second", "lenet", "d2l", "28", "61,706", "416,520", "3"]
    assert (second[7], second[10]) == ("12.25", "0.8125")

    # Each run's name links to its own report.html, relative to the page; a run without one is not linked.
    (href, text), = page.links
    assert text == run.name and not Path(href).is_absolute()
    assert (page_path.parent / href).resolve() == (run / "report.html").resolve()
    assert "Every setting is the same in all the runs." in page_path.read_text()
    assert page.images == ["train loss and test accuracy of the runs"]


def test_an_out_naming_a_runs_own_file_is_refused_and_the_file_kept(
    run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    """Issue 23: ``compare --out RUN/config.json`` replaced the run's configuration with the page."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {path.name: path.read_bytes() for path in copy.iterdir()}
    for own in ("config.json", "result.json"):
        code, out, err = run_cli("compare", str(copy), str(run), "--out", str(copy / own))
        assert code == 2 and out == ""
        assert err == f"error: --out {copy / own} would replace the run's own {own}; choose another --out\n"
    assert {path.name: path.read_bytes() for path in copy.iterdir()} == before
    code, _, err = run_cli("compare", str(copy), str(run), "--out", str(copy / "compare.html"))
    assert code == 0 and (copy / "compare.html").is_file(), err  # another name in the run directory is fine


def test_each_row_says_its_speed_how_many_test_images_scored_it_and_what_it_ran_with(
        run: Path, tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    result = json.loads((run / "result.json").read_text())
    rates = [json.loads(line)["examples_per_sec"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result["test_images"] == 200 and result["ran_with"].startswith("threads: ")  # limit_test of tiny_run
    (row,) = compare_runs([run])
    assert (row["examples_per_sec"], row["test_images"], row["ran_with"]) == (
        round(sum(rates) / len(rates)), 200, result["ran_with"])
    header, line = format_table([row]).splitlines()
    assert "train ex/s" in header and "test images" in header and f"{round(sum(rates) / len(rates)):,}" in line
    older = tmp_path / "older"  # a run written before these were recorded
    shutil.copytree(run, older)
    (older / "result.json").write_text(json.dumps({k: v for k, v in result.items()
                                                   if k not in ("test_images", "ran_with")}))
    (row,) = compare_runs([older])
    assert (row["test_images"], row["ran_with"]) == ("-", "-")
    code, _, err = run_cli("compare", str(run), str(older), "--out", str(tmp_path / "c.html"))
    page = (tmp_path / "c.html").read_text()
    assert code == 0 and "ran with" in page and "threads: " in page


# --- the table and the page, written out by hand ---------------------------------------------------

def hand_row(**values: object) -> dict:
    row = {"run": "a", "run_dir": "runs/a", "model": "lenet", "recipe": "d2l", "input_size": 28, "params": 61706,
           "macs": 416520, "epochs": 10, "train_seconds": 83.456, "examples_per_sec": 12345, "test_images": 10000,
           "test_acc": 0.87654, "ran_with": "threads: 2"}
    return {**row, **values}


def test_the_text_table_written_out() -> None:
    rows = [hand_row(), hand_row(run="second-run", model="resnet18", recipe="fast", input_size=96,
                                 params=11178378, macs=1234, epochs=2, train_seconds=5.0, examples_per_sec="-",
                                 test_images="-", test_acc=0.5)]
    assert format_table(rows).splitlines() == [
        "run         model     recipe  input  parameters  MACs / image  epochs  train time (s)  train ex/s"
        "  test images  test accuracy",
        "a           lenet     d2l        28      61,706       416,520      10            83.5      12,345"
        "       10,000         0.8765",
        "second-run  resnet18  fast       96  11,178,378         1,234       2             5.0           -"
        "            -         0.5000",
    ]
    assert format_table([hand_row(run="\x1b[2J")]).splitlines()[1].startswith("\\x1b[2J  lenet")
    assert format_table([hand_row(run=" lead")]).splitlines()[1].startswith(" lead  lenet")  # a name as it is


def test_no_runs_have_no_differing_settings() -> None:
    assert differing_settings([]) == {}


@pytest.fixture
def quick_pictures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The curves' PNG is a stand-in holding the figure's texts (drawing it takes seconds)."""
    from matplotlib.text import Text

    import convzoo.compare

    monkeypatch.setattr(convzoo.compare, "figure_png", lambda figure: "\n".join(
        ["PNG", *(t.get_text() for t in figure.findobj(Text) if t.get_text())]).encode())


def hand_run_dir(path: Path, *, result: dict | None = None, rows: list[dict] | None = None, **config: object) -> Path:
    """A finished LeNet run's files written by hand (no training): config.json, result.json, metrics.jsonl."""
    from dataclasses import asdict

    from convzoo.train import recipe

    path.mkdir(parents=True)
    settings = asdict(recipe("lenet", epochs=2, **config))
    model = {"name": "lenet", "num_classes": 10, "in_channels": 1, "backend": "torch", "input_size": 28}
    (path / "config.json").write_text(json.dumps({"format": "convzoo-1", "config": settings, "model": model}))
    (path / "result.json").write_text(json.dumps(result or {"test_acc": 0.8125, "train_seconds": 12.25, "epochs": 2}))
    rows = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.75, "lr": 0.1, "seconds": 6.0,
             "examples_per_sec": 1000.0}, {"epoch": 2, "train_loss": 0.5, "train_acc": 0.75, "test_acc": 0.8125,
                                           "lr": 0.1, "seconds": 6.25, "examples_per_sec": 1501.0}] \
        if rows is None else rows
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_compare_page_written_out(tmp_path: Path, quick_pictures: None) -> None:
    import base64

    from convzoo.compare import write_comparison
    from test_report import structure

    first = hand_run_dir(tmp_path / "runs" / "a<b>", lr=0.0025, result={
        "test_acc": 0.5, "train_seconds": 130.04, "epochs": 2, "test_images": 10000, "ran_with": "threads: 2 <x>"})
    (first / "report.html").write_text("<p>a report</p>")
    second = hand_run_dir(tmp_path / "runs" / "b", seed=7)
    out = tmp_path / "pages" / "c.html"
    out.parent.mkdir()
    path, rows = write_comparison([first, second], out)
    assert path == out and [row["run"] for row in rows] == ["a<b>", "b"]
    page = structure(out)
    html = out.read_text()
    assert page.tables[0][1:] == [["a<b>", "lenet", "d2l", "28", "61,706", "416,520", "2", "130.04", "1,250", "10,000",
                                   "0.5", "threads: 2 <x>"],
                                  ["b", "lenet", "d2l", "28", "61,706", "416,520", "2", "12.25", "1,250", "-", "0.8125",
                                   "-"]]
    assert page.tables[1] == [["setting", "a<b>", "b"], ["lr", "0.0025", "0.9"], ["seed", "0", "7"]]
    assert "<tr><th class=l>setting</th><th>a&lt;b&gt;</th><th>b</th></tr>" in html
    assert "<tr><td class=l>lr</td><td>0.0025</td><td>0.9</td></tr>" in html
    assert page.links == [("./../runs/a%3Cb%3E/report.html", "a<b>")]
    assert ('<tr><td class=l><a href="./../runs/a%3Cb%3E/report.html">a&lt;b&gt;</a></td><td class=l>lenet</td>'
            "<td class=l>d2l</td><td>28</td><td>61,706</td><td>416,520</td><td>2</td><td>130.04</td><td>1,250</td>"
            "<td>10,000</td><td>0.5</td><td>threads: 2 &lt;x&gt;</td></tr>") in html
    assert "<tr><td class=l>b</td><td class=l>lenet</td><td class=l>d2l</td><td>28</td>" in html
    assert "<title>convzoo runs compared</title>" in html
    assert "<h1>2 runs compared</h1>" in html and "<h2>Settings that differ</h2>" in html
    assert "<h2>Train loss and test accuracy</h2>" in html
    (src,) = [attrs["src"] for tag, attrs in parse(out).tags if tag == "img"]
    drawn = base64.b64decode(src.removeprefix("data:image/png;base64,")).decode().splitlines()
    assert "2 runs compared" in drawn and "a<b>" in drawn


def test_one_run_has_no_differing_settings_and_its_page_goes_to_compare_html(tmp_path: Path,
                                                                             quick_pictures: None) -> None:
    from convzoo.compare import write_comparison

    one = hand_run_dir(tmp_path / "one")
    assert differing_settings([one]) == {}
    path, _ = write_comparison([one])  # in the current directory, by default
    assert path == Path("compare.html") and "<h1>1 runs compared</h1>" in path.read_text()


def test_a_run_without_epochs_has_no_speed(tmp_path: Path) -> None:
    (row,) = compare_runs([hand_run_dir(tmp_path / "copy", rows=[])])
    assert row["examples_per_sec"] == "-" and row["run_dir"] == str(tmp_path / "copy")
