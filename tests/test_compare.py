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
