"""Mutation testing of the core with mutmut, one group of modules at a time (``make mutate``).

    python tools/mutation.py run [GROUP ...] [--max-children N] [--sample]   mutate and test (all groups by default)
    python tools/mutation.py run GROUP --survivors                 test again the survivors (after new tests)
    python tools/mutation.py report [GROUP ...] [--survivors]      the score per module, the survivors

Each group is a set of modules judged by the tests written for them (``GROUPS``): a mutant of
``ops/conv.py`` is run against ``test_ops.py`` and ``test_layers.py``, not against every test that
trains a network through it, which would take hours on two cores and would say less about whether
the op's own tests pin it down. mutmut records, per test, which functions it reaches, and runs a
mutant only against the tests of its group that reach the mutated function, fastest first, stopping
at the first failure. Tests marked ``slow`` (several seconds each) are left out of mutation runs.

A group works in ``mutants/GROUP/``: a ``pyproject.toml`` written from ``GROUPS`` (mutmut reads its
settings from the working directory's), links to ``src`` and ``tests``, and mutmut's own copy in
``mutants/GROUP/mutants/``. Running a group again re-tests only the mutants whose function changed: a
verdict stands while its function does, so after adding tests, ``run GROUP --survivors`` tests the
surviving mutants (and those no test reached) again. ``--sample`` tests a fifth of the mutants (those
numbered 1, 6, 11, ... in each function) for a quicker estimate. The score, over the mutants tested:

    score = killed / (mutants tested - equivalent)

where a timeout counts as killed (the mutant made the code loop) and the mutants shown to be
equivalent (no test could tell them from the original) are listed, each with its reason, in
``tests/equivalent_mutants/GROUP.txt``. A listed mutant that no longer exists, or that a test now kills,
is reported, so the list stays true.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "mutants"
EQUIVALENT = ROOT / "tests" / "equivalent_mutants"  # one file per group: GROUP.txt

# group: (modules mutated, the tests that judge them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "ops": (["src/convzoo/ops/*", "src/convzoo/layers.py"], ["tests/test_ops.py", "tests/test_layers.py"]),
    "models": (["src/convzoo/models/*"], ["tests/test_models.py", "tests/test_initialization.py"]),
    "data": (["src/convzoo/data/*"], ["tests/test_idx.py", "tests/test_source.py", "tests/test_batches.py",
                                      "tests/test_sets.py", "tests/test_catalog.py"]),
    "step": (["src/convzoo/step.py", "src/convzoo/optim.py"], ["tests/test_step.py", "tests/test_optim.py"]),
    "train": (["src/convzoo/train.py"], ["tests/test_train.py", "tests/test_validation.py"]),
    "checkpoint": (["src/convzoo/checkpoint.py"], ["tests/test_checkpoint.py", "tests/test_reliability.py"]),
    "export": (["src/convzoo/export.py"], ["tests/test_export.py"]),
    # Where users meet the code (issue 26): each group against the tests written for its modules.
    "config": (["src/convzoo/config.py", "src/convzoo/terms.py"], ["tests/test_config.py", "tests/test_api.py"]),
    "rundir": (["src/convzoo/rundir/*", "src/convzoo/run.py"], ["tests/test_rundir.py", "tests/test_api.py"]),
    "monitor": (["src/convzoo/monitor.py"], ["tests/test_monitor.py"]),
    "evaluate": (["src/convzoo/evaluate.py"], ["tests/test_evaluate.py"]),
    "predict": (["src/convzoo/predict.py", "src/convzoo/images.py"], ["tests/test_predict.py", "tests/test_images.py"]),
    "summary": (["src/convzoo/summary.py", "src/convzoo/estimate.py"],
                ["tests/test_summary.py", "tests/test_estimate.py"]),
    "pages": (["src/convzoo/compare.py", "src/convzoo/report.py", "src/convzoo/htmlpage.py", "src/convzoo/escape.py"],
              ["tests/test_compare.py", "tests/test_report.py", "tests/test_escape.py"]),
    "progress": (["src/convzoo/progress.py", "src/convzoo/runtime.py"],
                 ["tests/test_progress.py", "tests/test_runtime.py"]),
    "distributed": (["src/convzoo/distributed.py"], ["tests/test_distributed.py"]),
    "explore": (["src/convzoo/explore/*"], ["tests/test_explore.py"]),
    "api": (["src/convzoo/api.py"], ["tests/test_api.py"]),
    # the command line, judged by the tests that run its commands in-process (the run_cli fixture) and pin what
    # they print, take and pass on. Only test_cli.py: the other files that run commands do so on runs their module
    # fixtures train, and mutmut (which orders a mutant's tests by their call time, not their setup) would train
    # them again for nearly every one of the ~1,900 mutants: hours on two shared cores.
    "cli": (["src/convzoo/cli/*"], ["tests/test_cli.py"]),
}
SAMPLE = "*__mutmut_*[16]"  # a fifth of the mutants: those numbered 1, 6, 11, ... in each function


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string or list of strings is valid TOML


def prepare(group: str) -> Path:
    """``mutants/GROUP`` with its ``pyproject.toml`` and links to the sources and tests."""
    modules, tests = GROUPS[group]
    work = WORK / group
    work.mkdir(parents=True, exist_ok=True)
    for name in ("src", "tests"):
        link = work / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    settings = {
        "source_paths": ["src/"],
        "only_mutate": modules,
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-m", "not slow", "-p", "no:cacheprovider"],
        # fork each mutant's test process from a server that never ran the suite (torch is not fork-safe)
        "process_isolation": "forkserver",
        "also_copy": [],
    }
    text = "[tool.mutmut]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
    text += '\n[tool.pytest.ini_options]\ntestpaths = ["tests"]\nmarkers = ["slow: left out of mutation runs"]\n'
    config = work / "pyproject.toml"
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return work


def survivors(group: str) -> list[str]:
    """The mutants of ``group`` that survived or that no test reached, less those listed as equivalent."""
    equivalent = read_equivalent()
    return [name for codes in read_results(group).values() for name, code in codes.items()
            if status(code) in ("survived", "no tests") and name not in equivalent]


def run(groups: list[str], max_children: int, sample: bool = False, again: bool = False) -> int:
    # one thread per mutant's tests; hypothesis stops at the first failing example (tests/conftest.py)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYPOTHESIS_PROFILE": "mutation"}
    mutmut = Path(sys.executable).with_name("mutmut")
    for group in groups:
        print(f"== {group}: {', '.join(GROUPS[group][0])} against {', '.join(GROUPS[group][1])}", flush=True)
        names = [SAMPLE] if sample else []
        if again:
            names = survivors(group)
            print(f"   testing {len(names)} surviving mutants again", flush=True)
            if not names:
                continue
        code = subprocess.call([str(mutmut), "run", "--max-children", str(max_children), *names], cwd=prepare(group),
                               env=env, stdout=subprocess.DEVNULL)
        if code:
            print(f"error: mutmut failed on {group} (exit {code}); run it in {WORK / group} to see why",
                  file=sys.stderr)
            return code
    return 0


def read_equivalent(folder: Path = EQUIVALENT) -> dict[str, str]:
    """``mutant name -> reason`` from lines ``name: reason`` (a line starting with ``#`` is a comment)."""
    found = {}
    for line in (line for path in sorted(folder.glob("*.txt")) for line in path.read_text().splitlines()):
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(":")
            found[name.strip()] = reason.strip()
    return found


def read_results(group: str, sample: bool = False) -> dict[str, dict[str, int | None]]:
    """``module -> {mutant: exit code}`` for every module of ``group`` mutmut has mutated (``sample``: only
    the mutants ``run --sample`` tests)."""
    source = WORK / group / "mutants" / "src"
    results = {}
    for meta in sorted(source.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if sample:
            codes = {name: code for name, code in codes.items() if fnmatch.fnmatch(name, SAMPLE)}
        if codes:
            results[meta.relative_to(source).as_posix().removesuffix(".py.meta").replace("/", ".")] = codes
    return results


def status(code: int | None) -> str:
    """mutmut's name for a mutant's exit code; a timeout counts as killed (the mutant made the code loop)."""
    from mutmut.stats import status_by_exit_code  # installed by `make mutate`

    name = status_by_exit_code[code]
    return "killed" if name == "timeout" else name


def table(results: dict[str, dict[str, int | None]], equivalent: dict[str, str]) -> str:
    columns = ["mutants", "killed", "survived", "equivalent", "no tests", "not checked"]
    lines = ["| module | " + " | ".join(columns) + " | score |", "|---" + "|---:" * (len(columns) + 1) + "|"]
    total: Counter = Counter()
    for module, codes in results.items():
        counts = Counter("equivalent" if name in equivalent and status(code) == "survived" else status(code)
                         for name, code in codes.items())
        counts["mutants"] = len(codes)
        total.update(counts)
        lines.append(f"| `{module}` | " + " | ".join(str(counts[c]) for c in columns) + f" | {_score(counts)} |")
    lines.append("| **all** | " + " | ".join(str(total[c]) for c in columns) + f" | {_score(total)} |")
    return "\n".join(lines)


def _score(counts: Counter) -> str:
    judged = counts["mutants"] - counts["not checked"] - counts["equivalent"]
    return f"{counts['killed'] / judged:.1%}" if judged else "-"


def report(groups: list[str], survivors: bool, sample: bool = False) -> int:
    results = {m: codes for g in groups for m, codes in read_results(g, sample).items()}
    if not results:
        print("error: no results yet: run `make mutate` first", file=sys.stderr)
        return 2
    equivalent = read_equivalent()
    print(table(results, equivalent))
    codes = {name: code for module in results.values() for name, code in module.items()}
    for name in (n for n in equivalent if not sample or fnmatch.fnmatch(n, SAMPLE)):
        if name.split(".x", 1)[0] in results and (name not in codes or status(codes[name]) != "survived"):
            state = "gone" if name not in codes else status(codes[name])
            print(f"note: {name} is listed as equivalent but is {state}: update {EQUIVALENT.name}/")
    if survivors:
        left = [n for n, c in codes.items() if status(c) in ("survived", "no tests") and n not in equivalent]
        print(f"\n{len(left)} surviving mutants (`mutmut show NAME` in mutants/GROUP prints one):")
        print("\n".join(f"{n}  [{status(codes[n])}]" for n in left))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "report"])
    parser.add_argument("groups", nargs="*", metavar="GROUP", help=f"of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--survivors", action="store_true",
                        help="report: list the surviving mutants; run: test only them again")
    parser.add_argument("--sample", action="store_true",
                        help="run: test a fifth of the mutants (a quicker estimate); report: only those")
    args = parser.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group {unknown[0]!r}; the groups are {', '.join(GROUPS)}")
    groups = args.groups or list(GROUPS)
    if args.command == "run":
        return run(groups, args.max_children, args.sample, args.survivors)
    return report(groups, args.survivors, args.sample)


if __name__ == "__main__":
    sys.exit(main())
