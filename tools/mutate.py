"""Mutation testing of the rule modules: does each module's own test file notice a small change?

    ./dev mutate                         every module below against its own tests
    ./dev mutate policy tokens           only these (names as in MODULES)
    ./dev mutate --list policy           print the mutants, run nothing

One mutant is one small change to one module (a comparison `<` made `<=`, `and` made `or`, a
constant moved by one, `min` made `max`, a sort or a `reversed` removed, a statement dropped, ...).
Each is run against the module's own test file; the mutant is *killed* when a test fails, and
*survives* when every test still passes: a rule that no test pins. Mutants that cannot change
behaviour are listed, each with its reason, in tests/mutation-equivalents.txt and are not counted,
so the score stays honest.

Self-written on `ast` rather than mutmut: it mutates the module in memory (the file on disk is
never touched, so an interrupted run leaves nothing behind), and each mutant runs in a forked
child of a process that has already imported the third-party libraries, so a mutant costs its
tests and not a fresh interpreter. Not run in CI: a full run takes minutes.
"""

from __future__ import annotations

import argparse
import ast
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mutants import ROOT, Mutant, mutants_of, mutated_source, path_of

EQUIVALENTS = ROOT / "tests" / "mutation-equivalents.txt"

# name -> (module, pytest arguments: its own tests). The first four are the rule modules of
# the target. Pure modules' tests need no fixture: --noconftest spares each mutant the import of
# the settings, the tables and the SMTP sink.
_PURE = "--noconftest"
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "policy": (
        "mailer.core.policy",
        (_PURE, "tests/test_policy_edges.py", "tests/test_policy.py"),
    ),
    "tokens": ("mailer.core.tokens", (_PURE, "tests/test_tokens.py")),
    "throttle": ("mailer.core.throttle", (_PURE, "tests/test_throttle.py")),
    "transport": (
        "mailer.delivery.transport",
        ("tests/test_transport_replies.py", "tests/test_transport.py"),
    ),
    "headers": ("mailer.core.headers", ("tests/test_headers.py",)),
}

# What the children import before forking, so a mutant does not pay for it again (and, per
# module, every module of the project that does not import the mutated one: _independent_of).
WARM_IMPORTS = (
    "pytest", "hypothesis", "sqlalchemy", "sqlmodel", "aiosmtplib", "aiosmtpd.controller",
    "itsdangerous", "jinja2", "email_validator", "psycopg",
)  # fmt: skip


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutated source when `module` is imported, wherever it is imported from."""

    def __init__(self, module: str, source: str) -> None:
        self.module, self.source = module, source

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.module:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=str(path_of(fullname)))

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = str(path_of(self.module))
        exec(compile(self.source, module.__file__, "exec"), module.__dict__)


def _run_tests(tests: Sequence[str], mutant: Mutant | None, timeout: float) -> str:
    """'passed', 'failed', 'error' or 'timeout' of the tests, in a forked child."""
    storage = tempfile.mkdtemp(prefix="mutate-hypothesis-")
    pid = os.fork()
    if pid == 0:  # the child: install the mutant, run pytest quietly, report by exit code
        try:
            if mutant is not None:
                sys.meta_path.insert(0, _MutantFinder(mutant.module, mutated_source(mutant)))
            if not os.environ.get("MUTATE_VERBOSE"):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            # An example database of its own: a mutant's failing examples must not replay in
            # later runs (nor in the project's .hypothesis/).
            os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = storage
            import pytest

            # --assert=plain: a mutant needs a verdict, not a message, and the modules imported
            # before the fork could not be rewritten anyway.
            code = pytest.main(
                ["-x", "-q", "-p", "no:cacheprovider", "--assert=plain", "--hypothesis-seed=0",
                 *tests]
            )  # fmt: skip
            os._exit(int(code))
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(3)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            shutil.rmtree(storage, ignore_errors=True)
            return "timeout"
        time.sleep(0.02)
    shutil.rmtree(storage, ignore_errors=True)
    code = os.waitstatus_to_exitcode(status)
    return {0: "passed", 1: "failed"}.get(code, "error")


def _project_modules() -> dict[str, set[str]]:
    """Each module of mailer/ and double_optin/ with the project modules it imports (ast)."""
    graph: dict[str, set[str]] = {}
    for package in ("mailer", "double_optin"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:  # relative: from the package this module is in
                        anchor = parts if is_package else parts[:-1]
                        anchor = anchor[: len(anchor) - node.level + 1]
                        base = ".".join([*anchor, *([base] if base else [])])
                    imported.add(base)
                    imported.update(f"{base}.{a.name}" for a in node.names)
            # Importing a module imports its packages first.
            imported.update(".".join(parts[:i]) for i in range(1, len(parts)))
            graph[".".join(parts)] = {
                m for m in imported if m.split(".")[0] in ("mailer", "double_optin")
            }
    return graph


def _independent_of(module: str) -> list[str]:
    """The project's modules that can be imported without importing `module`."""
    graph = _project_modules()
    dependent = {module}
    changed = True
    while changed:
        changed = False
        for name, imports in graph.items():
            if name not in dependent and imports & dependent:
                dependent.add(name)
                changed = True
    return sorted(name for name in graph if name not in dependent)


def read_equivalents(path: Path = EQUIVALENTS) -> dict[str, str]:
    """`key  # reason` lines: the mutants that cannot change behaviour, and why."""
    equivalents: dict[str, str] = {}
    if path.exists():
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                key, _, reason = line.partition("  # ")
                equivalents[key.strip()] = reason.strip()
    return equivalents


def _mutate_module(name: str, equivalents: dict[str, str], verbose: bool) -> dict[str, Any]:
    """Run every mutant of one module; print its line and survivors; return the counts."""
    module, tests = MODULES[name]
    for independent in _independent_of(module):
        importlib.import_module(independent)
    started = time.monotonic()
    if _run_tests(tests, None, timeout=600) != "passed":
        print(f"{name}: the tests fail without any mutant; fix them first", file=sys.stderr)
        return {"error": True}
    timeout = 3 * (time.monotonic() - started) + 10
    killed, survivors, equivalent = 0, [], 0
    for mutant in mutants_of(module):
        if mutant.key in equivalents:
            equivalent += 1
            continue
        began = time.monotonic()
        result = _run_tests(tests, mutant, timeout)
        if result == "passed":
            survivors.append(mutant.key)
        else:
            killed += 1
        if verbose:
            print(f"  {result:8} {time.monotonic() - began:5.1f} s  {mutant.key}", flush=True)
    counted = killed + len(survivors)
    score = killed / counted if counted else 1.0
    print(
        f"{name:10} {module:26} {killed:4} killed {len(survivors):4} survived "
        f"{equivalent:4} equivalent  score {score:.2f}  ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    for key in survivors:
        print(f"    survived: {key}", flush=True)
    return {"killed": killed, "survived": len(survivors), "equivalent": equivalent}


def _in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`work()` in a forked child, so the project modules it imports stay out of this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = work()
        except BaseException as exc:
            result = {"error": True, "exception": repr(exc)}
        with os.fdopen(write, "w") as out:
            json.dump(result, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as incoming:
        answer = incoming.read()
    os.waitpid(pid, 0)
    return dict(json.loads(answer or '{"error": true}'))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev mutate", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"modules, of {', '.join(MODULES)} (default all)")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each mutant's result")
    args = parser.parse_args(argv)
    names = args.names or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; choose from {', '.join(MODULES)}")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    if args.list:
        for name in names:
            for mutant in mutants_of(MODULES[name][0]):
                print(mutant.key)
        return 0
    equivalents = read_equivalents()
    for warm in WARM_IMPORTS:
        importlib.import_module(warm)

    totals = {"killed": 0, "survived": 0, "equivalent": 0}
    for name in names:
        counts = _in_child(lambda name=name: _mutate_module(name, equivalents, args.verbose))
        if counts.get("error"):
            print(f"{name}: {counts.get('exception', 'the run failed')}", file=sys.stderr)
            return 2
        for key in totals:
            totals[key] += counts[key]
    counted = totals["killed"] + totals["survived"]
    score = totals["killed"] / counted if counted else 1.0
    print(
        f"total: {totals['killed']} killed, {totals['survived']} survived, "
        f"{totals['equivalent']} equivalent (listed in {EQUIVALENTS.relative_to(ROOT)}); "
        f"score {score:.2f}"
    )
    current = {m.key for n in names for m in mutants_of(MODULES[n][0])}
    prefixes = tuple(_path_prefix(n) for n in names)
    for key in sorted(k for k in equivalents if k.startswith(prefixes) and k not in current):
        print(f"note: listed as equivalent but no longer a mutant (source changed?): {key}")
    return 0 if not totals["survived"] else 1


def _path_prefix(name: str) -> str:
    return str(path_of(MODULES[name][0]).relative_to(ROOT)) + ":"


if __name__ == "__main__":
    sys.exit(main())
