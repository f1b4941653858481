"""Run many ``python -m convzoo ARGS`` commands for the price of one interpreter start.

This script imports convzoo (and with it torch, ~2 s) once, then forks one child per command. A
child is what ``python -m convzoo ARGS`` would be after its imports: it moves to the command's
working directory, takes its environment, writes stdout and stderr to files, and runs the
package's ``__main__`` through ``runpy`` as ``-m`` does; an exception that escapes prints its
traceback and exits 1, as the interpreter does. Two children run at a time.

    stdin:  a JSON list of {"argv": [...], "cwd": "...", "env": {...}}
    stdout: a JSON list of {"code": int, "stdout": str, "stderr": str, "seconds": float}, in order

tests/test_reliability.py checks that it reports what a fresh ``python -m convzoo`` process does.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
import time
import traceback
from pathlib import Path

import convzoo.cli  # noqa: F401  the imports each command would otherwise pay for
import convzoo.figures  # noqa: F401
import convzoo.images  # noqa: F401
import convzoo.train  # noqa: F401

PARALLEL = 2


def _child(job: dict, out: str, err: str) -> None:
    code = 1
    try:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = [str(Path(convzoo.__file__).with_name("__main__.py")), *job["argv"]]
        try:
            runpy.run_module("convzoo", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    jobs = json.load(sys.stdin)
    results: list[dict | None] = [None] * len(jobs)
    running: dict[int, tuple[int, str, str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        pending = list(enumerate(jobs))
        while pending or running:
            while pending and len(running) < PARALLEL:
                index, job = pending.pop(0)
                out, err = f"{scratch}/{index}.out", f"{scratch}/{index}.err"
                sys.stdout.flush()
                pid = os.fork()
                if pid == 0:
                    _child(job, out, err)
                running[pid] = (index, out, err, time.perf_counter())
            pid, status = os.wait()
            index, out, err, started = running.pop(pid)
            results[index] = {"code": os.waitstatus_to_exitcode(status), "stdout": Path(out).read_text(),
                              "stderr": Path(err).read_text(), "seconds": time.perf_counter() - started}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
