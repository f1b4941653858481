"""Run docs/tour.md as a test, and make the notebook version of it.

The tour is Markdown. A fenced ``python`` or ``sh`` block is code; a fenced ``text`` block right after
it is what that code prints, compared as doctest compares (``...`` stands for any text, trailing
spaces do not count). ``text +NUMBER`` compares each decimal number only to the precision the page
shows it with (``0.7`` matches anything from 0.6 to 0.8), for results that differ from machine to
machine. Code with no ``text`` block after it must print nothing. Python blocks share one namespace
and run in this process; as in a notebook, the value of a last line that is an expression is shown.
``sh`` blocks run in ``sh``, with this interpreter's ``bin`` first on the PATH (where ``convzoo``
is). Paths in the tour are relative to the directory it runs in.

The notebook is the same page through jupytext: each code block becomes a cell (``sh`` ones as
``%%sh`` cells) whose stored output is the page's ``text`` block, so nothing is written twice. A
first code cell puts the kernel's ``bin`` at the front of its ``PATH`` (the ``%%sh`` cells find
``convzoo`` with nothing activated), and the training calls lose their ``progress=False`` (in
Jupyter a run shows its live plot).

    python tools/tour_runner.py run docs/tour.md --cwd docs             # run it there (make tour-pictures)
    python tools/tour_runner.py run docs/tour.md --cwd /tmp/x --update  # write the new outputs into the page
    python tools/tour_runner.py notebook docs/tour.md docs/tour.ipynb   # the notebook (make tour-notebook)
    jupyter nbconvert --to notebook --execute --inplace docs/tour.ipynb   # run it headless (make tour-notebook-run)

Sybil parses the page into examples (line numbers, a shared namespace, its failure messages) and
lends its doctest output checker; this module supplies the parser and the evaluator.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import doctest
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
from sybil import Document, Example, Region
from sybil.evaluators.doctest import OutputChecker
from sybil.example import SybilFailure

# A fence at the start of a line: ```info, the body, the closing ```.
FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_LANGUAGES = ("python", "sh")
CHECKER = OutputChecker()


@dataclass
class Block:
    """One code block of the page and what the page says it prints."""

    language: str
    source: str
    want: str  # "" when the page shows no output
    flags: int  # doctest option flags
    line: int  # line of the opening fence in the page (1-based), as Sybil reports it
    start: int  # character span of the code fence and its output fence
    end: int
    got: str | None = None  # what it printed, once run


def _flags(names: list[str]) -> int:
    flags = doctest.ELLIPSIS
    for name in names:
        if not name.startswith("+") or name[1:] not in doctest.OPTIONFLAGS_BY_NAME:
            raise ValueError(f"unknown option {name!r} on a text fence (expected e.g. +NUMBER)")
        flags |= doctest.OPTIONFLAGS_BY_NAME[name[1:]]
    return flags


def blocks(text: str) -> list[Block]:
    """The page's code blocks, each with the ``text`` block that follows it (if any)."""
    fences = list(FENCE.finditer(text))
    found: list[Block] = []
    for i, fence in enumerate(fences):
        language = fence["info"].strip()
        if language not in CODE_LANGUAGES:
            continue
        want, flags, end = "", doctest.ELLIPSIS, fence.end()
        following = fences[i + 1] if i + 1 < len(fences) else None
        if following and following["info"].split()[:1] == ["text"] and not text[fence.end():following.start()].strip():
            want, flags, end = following["body"], _flags(following["info"].split()[1:]), following.end()
        line = text.count("\n", 0, fence.start()) + 1
        found.append(Block(language, fence["body"], want, flags, line, fence.start(), end))
    return found


def run_python(source: str, namespace: dict, path: str, line: int) -> str:
    """Execute ``source`` (fenced at ``line``) in ``namespace``; returns what it printed.

    Tracebacks name the page's lines. As in a notebook cell, the value of a last line that is an
    expression is shown (unless None).
    """
    tree = ast.parse("\n" * line + source, path)  # the source starts on the line after the fence
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(tree, path, "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), path, "eval"), namespace)
            if value is not None:
                print(repr(value))
    return out.getvalue()


def run_sh(source: str) -> str:
    """Run ``source`` in ``sh`` as a ``%%sh`` cell does; returns its stdout, raises on a failing status."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["sh", "-c", source], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"exit status {done.returncode}\n{done.stdout}{done.stderr}")
    return done.stdout


def compare(block: Block, got: str) -> str | None:
    """None if ``got`` is what the page shows, else a doctest-style report of the difference."""
    if CHECKER.check_output(block.want, got, block.flags):
        return None
    return CHECKER.output_difference(doctest.Example(block.source, block.want), got, block.flags)


def evaluate(example: Example) -> str | None:
    block: Block = example.parsed
    if block.language == "python":
        block.got = run_python(block.source, example.namespace, example.path, block.line)
    else:
        block.got = run_sh(block.source)
    return compare(block, block.got)


def parse(document: Document) -> Iterator[Region]:
    """Sybil's parser: one region (code and its output) per code block."""
    for block in blocks(document.text):
        yield Region(block.start, block.end, block, evaluate)


def run(page: str | Path) -> list[tuple[Example, BaseException]]:
    """Run every block of ``page`` in order in the current directory; the failures, in order.

    A block that fails does not stop the ones after it (they may fail in turn).
    """
    document = Document.parse(str(Path(page).resolve()), parse)
    failures = []
    for example in document.examples():
        try:
            example.evaluate()
        except Exception as exc:  # a wrong output (SybilFailure) or an error in the block
            failures.append((example, exc))
    return failures


def update(page: str | Path, failures: list[tuple[Example, BaseException]]) -> int:
    """Write what each block that printed something else printed into ``page``; the number of blocks changed.

    Blocks that raised are left alone. Check the diff, and put ``...`` back where an output varies.
    """
    text = Path(page).read_text()
    changed = [example.parsed for example, exc in failures if isinstance(exc, SybilFailure)]
    for block in sorted(changed, key=lambda b: b.start, reverse=True):
        code_end = FENCE.match(text, block.start).end()
        output = FENCE.match(text, text.index("```", code_end)) if block.end > code_end else None
        if block.got and output:
            text = text[:output.start("body")] + block.got + text[output.end("body"):]
        elif block.got:
            text = text[:code_end] + "\n\n```text\n" + block.got + "```" + text[code_end:]
        else:  # it should print nothing: drop the output fence
            text = text[:code_end] + text[block.end:]
    Path(page).write_text(text)
    return len(changed)


def describe(failures: list[tuple[Example, BaseException]]) -> str:
    return "\n\n".join(f"line {example.line}: {type(exc).__name__}: {exc}" for example, exc in failures)


def notebook(page: str | Path) -> nbformat.NotebookNode:
    """The page as a notebook: text cells, one code cell per code block with the page's output stored."""
    import jupytext

    text = Path(page).read_text()
    found = blocks(text)
    # The output fences become the cells' outputs; the rest of the page goes to jupytext as it is.
    stripped, place = [], 0
    for block in found:
        code_end = FENCE.match(text, block.start).end()
        stripped.append(text[place:code_end])
        place = block.end
    stripped.append(text[place:])
    nb = jupytext.reads("".join(stripped), fmt="md")
    cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    if len(cells) != len(found):
        raise ValueError(f"jupytext made {len(cells)} code cells of the {len(found)} code blocks of {page}")
    for cell, block in zip(cells, found):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=block.want)] if block.want else []
        if block.language == "python":  # in a notebook a run shows its live plot (a test run of the page does not)
            cell.source = NO_PROGRESS.sub("", cell.source)
    first_code = next(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    nb.cells.insert(first_code, nbformat.v4.new_code_cell(KERNEL_PATH, metadata={"tags": [SETUP_TAG]}))
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    return nb


# The notebook's first code cell: the shell cells (``%%sh``) run ``convzoo`` from the kernel's own
# environment, whether or not that environment was activated in the shell that started Jupyter.
SETUP_TAG = "convzoo-setup"
KERNEL_PATH = """\
# So that the shell cells (%%sh) find the convzoo of this kernel's environment, activated or not.
import os
import sys

os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")"""
NO_PROGRESS = re.compile(r",\s*progress=False\b")


def page_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The notebook's code cells that are the page's code blocks (not the set-up cell ``notebook`` adds)."""
    return [cell for cell in nb.cells
            if cell.cell_type == "code" and SETUP_TAG not in cell.get("metadata", {}).get("tags", [])]


def cell_output(cell: nbformat.NotebookNode) -> str:
    """What an executed cell printed (stdout) and the value it showed, as the page would show them."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == "stdout":
            parts.append(output.text)
        elif output.output_type == "execute_result":
            parts.append(output.data.get("text/plain", "") + "\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("run", help="run every block and check its output")
    p.add_argument("page")
    p.add_argument("--cwd", default=".", help="directory to run in (the pictures go to its tour/)")
    p.add_argument("--update", action="store_true",
                   help="write what the blocks printed into the page where it differs (check the diff)")
    p = commands.add_parser("notebook", help="write the page as a Jupyter notebook")
    p.add_argument("page")
    p.add_argument("out")
    args = parser.parse_args(argv)
    if args.command == "notebook":
        nbformat.write(notebook(args.page), args.out)
        print(f"wrote {args.out}")
        return 0
    page = Path(args.page).resolve()
    os.chdir(args.cwd)
    failures = run(page)
    if failures and args.update:
        print(f"updated the output of {update(page, failures)} blocks in {page}")
        failures = [(example, exc) for example, exc in failures if not isinstance(exc, SybilFailure)]
    if failures:
        print(describe(failures), file=sys.stderr)
        return 1
    print(f"{page.name}: every block printed what the page shows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
