"""convzoo.escape: a user-given name reaches HTML, a link, a plot, a terminal and JSON as the same text, never as
markup, a scheme, math, a hidden label or an escape sequence; and the commands that show names use it."""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from convzoo import escape
from convzoo.compare import compare_runs, format_table
from convzoo.figures import runs_figure
from convzoo.predict import Prediction
from convzoo.report import write_report
from convzoo.run import Run

HOSTILE = ["<script>alert(1)</script>", "a\"b'c&d", "$x^2$", "_x", "javascript:alert(1)", "a#b?c%20d",
           "\x1b[31mred\x1b[0m", "line\nbreak", "tab\there", "\u202eevil", os.fsdecode(b"run\xff\xfe"), "", ".", "..",
           "\\$", "a\\", "%", "\x00nul", "\u2028sep"]

# Names as a file system gives them: arbitrary Unicode, bytes decoded as os.fsdecode does, and the hostile ones.
names = st.one_of(
    st.text(),
    st.binary(max_size=24).map(os.fsdecode),
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE + ["x", " ", "é", "日本"]), max_size=4).map("".join),
)
pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in escape._BIDI


@given(names)
@SETTINGS
def test_terminal_and_json_text_have_no_control_character_and_encode_as_utf8(name: str) -> None:
    for out in (escape.terminal(name), escape.json_text(name)):
        assert not any(_unsafe(ch) for ch in out)
        out.encode("utf-8")  # no lone surrogate left
        json.loads(json.dumps(out, ensure_ascii=False))
    if not any(_unsafe(ch) for ch in name):
        assert escape.terminal(name) == name  # nothing else is changed


def test_terminal_shows_escapes_and_undecodable_bytes() -> None:
    assert escape.terminal("\x1b[31mred") == "\\x1b[31mred"
    assert escape.terminal(os.fsdecode(b"a\xffb")) == "a\\xffb"
    assert escape.terminal("\u202eevil\n") == "\\u202eevil\\x0a"
    assert escape.json_safe({os.fsdecode(b"\xff"): [os.fsdecode(b"\xfe"), 1]}) == {"\\xff": ["\\xfe", 1]}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [value or "" for key, value in attrs if key == "href"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@given(names)
@SETTINGS
def test_html_text_parses_back_to_the_same_text_and_no_markup(name: str) -> None:
    html = f'<p title="{escape.html_text(name)}">{escape.html_text(name)}</p>'
    page = _parse(html)
    assert page.tags == ["p"]
    assert "".join(page.text) == escape.printable(name)


@given(st.lists(names.filter(lambda n: n not in ("", ".", "..") and "/" not in n), min_size=1, max_size=3))
@SETTINGS
def test_href_resolves_to_the_intended_relative_path_and_is_never_a_scheme(parts: list[str]) -> None:
    page = _parse(f'<a href="{escape.href(PurePosixPath(*parts))}">x</a>')
    (link,) = page.links
    assert urlsplit(link).scheme == "" and not link.startswith("/")
    resolved = urljoin("http://example.invalid/pages/compare.html", link)
    assert resolved.startswith("http://example.invalid/pages/")
    path = urlsplit(resolved).path
    assert urlsplit(resolved).query == "" and urlsplit(resolved).fragment == ""
    got = [unquote_to_bytes(segment) for segment in path.split("/")[2:]]
    assert got == [os.fsencode(part) for part in parts]


def test_href_keeps_dot_segments_and_absolute_paths_as_paths() -> None:
    assert escape.href(Path("../runs/a#b/report.html")) == "./../runs/a%23b/report.html"
    assert escape.href(Path("javascript:alert(1)")) == "./javascript%3Aalert%281%29"
    assert escape.href(Path("/srv/r u n")) == "/srv/r%20u%20n"


def _drawn(fig: Figure) -> None:
    FigureCanvasAgg(fig).draw()


@given(names)
@settings(SETTINGS, max_examples=25)
def test_plot_text_is_drawn_exactly(name: str) -> None:
    fig = Figure(figsize=(2, 1))
    ax = fig.add_subplot()
    title = ax.set_title(escape.plot_text(name))
    (line,) = ax.plot([0, 1], [0, 1], label=escape.plot_label(name))
    legend = ax.legend()
    _drawn(fig)  # no mathtext error, whatever the name
    assert escape.shown_plot_text(title.get_text()) == escape.printable(name)
    assert title._preprocess_math(title.get_text()) == (escape.printable(name), False)  # shown as is, not math
    (entry,) = legend.get_texts()  # a name starting with "_" is not dropped
    assert entry._preprocess_math(entry.get_text())[0].removeprefix("\u200b") == escape.printable(name)


def test_runs_figure_keeps_every_run_in_its_legend_as_written(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "train_loss": 1.0, "test_acc": 0.5}]
    labels = ["_hidden", "$x^2$", "a$b", os.fsdecode(b"\xff")]
    fig = runs_figure({label: rows for label in labels})
    _drawn(fig)
    shown = [escape.shown_plot_text(t.get_text()) for t in fig.legends[0].get_texts()]
    assert shown == ["_hidden", "$x^2$", "a$b", "\\xff"]


def test_a_predictions_line_is_terminal_safe() -> None:
    line = Prediction("\x1b]0;pwned\x07shoe.png", [(7, 0.9)]).format()
    assert line.startswith("\\x1b]0;pwned\\x07shoe.png: Sneaker") and "\x1b" not in line


# --- the commands, on runs whose directories are named by an attacker ----------------------------

@pytest.fixture(scope="module")
def hostile_runs(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("hostile")
    runs = []
    for name in ("javascript:alert(1)", "<script>x<\\script> \x27\"&#?%", "_$x^2$", os.fsdecode(b"bytes\xff\x1b[2J")):
        shutil.copytree(tiny_run, root / name)
        runs.append(root / name)
    return runs


def test_compare_links_and_names_hostile_runs_as_data(hostile_runs: list[Path], tmp_path: Path,
                                                      run_cli: Callable[..., tuple[int, str, str]]) -> None:
    write_report(Run.open(hostile_runs[-1], "cpu").evaluated())  # the others keep the report training wrote
    page = tmp_path / "compare.html"
    code, out, err = run_cli("compare", *map(str, hostile_runs), "--out", str(page), "--json")
    assert code == 0, err
    assert [row["run"] for row in json.loads(out)["runs"]] == [run.name for run in hostile_runs]
    parsed = _parse(page.read_text(encoding="utf-8"))
    assert "script" not in parsed.tags
    assert len(parsed.links) == len(hostile_runs)
    for link, run in zip(parsed.links, hostile_runs):
        assert urlsplit(link).scheme == ""
        assert (page.parent / os.fsdecode(unquote_to_bytes(link))).resolve() == (run / "report.html").resolve()
    text = "".join(parsed.text)
    assert all(escape.printable(run.name) in text for run in hostile_runs)
    report = _parse((hostile_runs[-1] / "report.html").read_text(encoding="utf-8"))
    assert "bytes\\xff\\x1b[2J" in "".join(report.text)
    assert "\x1b" not in format_table(compare_runs(hostile_runs))


def test_eval_of_a_run_whose_name_is_not_utf8(hostile_runs: list[Path],
                                              run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = run_cli("eval", str(hostile_runs[-1]), "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(out)["num_examples"] == 200


def test_commands_print_a_path_that_is_not_utf8(hostile_runs: list[Path],
                                                run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = run_cli("report", str(hostile_runs[-1]))
    assert code == 0, err
    assert "\\xff\\x1b[2J" in out and "\x1b" not in out


def test_an_error_line_is_terminal_safe(tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = run_cli("report", str(tmp_path / "\x1b[2Jgone\nsecond"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "\x1b" not in err and "\\x1b[2Jgone" in err


# --- each destination's encoding, written out ---------------------------------------------------

def test_each_kind_of_unsafe_character_has_its_escape() -> None:
    # C0, DEL, C1 as \xNN; the bytes os.fsdecode carries (U+DC80..U+DCFF) as the byte; other surrogates,
    # the line and paragraph separators and the bidirectional controls as \uNNNN
    cases = [("\x00", "\\x00"), ("\x1f", "\\x1f"), ("\x7f", "\\x7f"), ("\x80", "\\x80"), ("\x9f", "\\x9f"),
             ("\udc80", "\\x80"), ("\udcff", "\\xff"), ("\udc7f", "\\udc7f"), ("\udd00", "\\udd00"),
             ("\ud800", "\\ud800"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")]
    cases += [(ch, f"\\u{ord(ch):04x}") for ch in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067"
              "\u2068\u2069"]
    for ch, shown in cases:
        assert escape.printable(f"a{ch}b") == f"a{shown}b", ch
    # what is printable or merely unusual stays as it is: a no-break space, a zero-width space, an emoji, ÿ
    for text in ("a\u00a0b", "\u200bx", "\U0001f600", "\u00ff", "\u00a0", "plain"):
        assert escape.printable(text) == text
    assert escape.printable(12) == "12"


def test_json_safe_makes_every_string_utf8_and_keeps_the_rest() -> None:
    bad = os.fsdecode(b"\xfe")
    assert escape.json_safe({bad: (bad, 1.5, None), 3: [True, {"k": bad}]}) == \
        {"\\xfe": ["\\xfe", 1.5, None], 3: [True, {"k": "\\xfe"}]}
    assert escape.json_safe(bad) == "\\xfe" and escape.json_safe(7) == 7
    assert escape.json_text("\x1b") == escape.terminal("\x1b") == "\\x1b"


def test_html_text_escapes_markup_and_quotes() -> None:
    assert escape.html_text("<a href='x'>\"&\"</a>\x1b") == \
        "&lt;a href=&#x27;x&#x27;&gt;&quot;&amp;&quot;&lt;/a&gt;\\x1b"


def test_href_encodes_every_segment() -> None:
    assert escape.href(["a b", "c#d", os.fsdecode(b"\xff"), "&"]) == "./a%20b/c%23d/%FF/%26"
    assert escape.href("x/y?z") == "./x/y%3Fz"
    assert escape.href(PurePosixPath("/")) == "/" and escape.href("") == "./"
    assert escape.href(PurePosixPath("/a/XXXX")) == "/a/XXXX"
    assert escape.href(["it's"]) == "./it%27s"


def test_plot_text_and_labels() -> None:
    assert escape.plot_text("$x$\n") == "\\$x\\$\\x0a"
    assert escape.plot_label("_a") == "\u200b_a" and escape.plot_label("") == "\u200b"
    assert escape.plot_label("a_") == "a_" and escape.plot_label("$") == "\\$"
    assert escape.shown_plot_text("\u200b_a\\$") == "_a$" and escape.shown_plot_text("a\u200b") == "a\u200b"
