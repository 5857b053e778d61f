"""Simulation is not product core: the product packages never import :mod:`costline.sim` at
module level, and only the commands that run a simulation import it, inside the command.

An AST walk over every product module (``costline``'s core, collectors, processors, serving, jobs,
alerts, dashboards, distill) finds each import of ``costline.sim`` and each string naming one of
its modules (an ``importlib`` target); each must be one of :data:`ALLOWED`, and each of
:data:`ALLOWED` must still be there (a stale allowance fails too).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIM = "costline.sim"

#: (module, enclosing function) of the only places the product reaches the simulation; a function
#: of None is a module-level string an importlib call resolves when ``main()`` runs.
ALLOWED: set[tuple[str, str | None]] = {
    ("costline.areas", None),  # AREAS: "costline.sim" -> its cli module's `costline demo` when main() runs
    ("costline.serving.gateway.serve_cli", "serve"),  # `costline serve --standin`
    ("costline.serving.gateway.serve_cli", "standin"),  # `costline standin`
    ("costline.alerts.cli", "slack_standin"),  # `costline alerts slack-standin`
    ("costline.serving.routing.evaluation", "oracle_label_share"),  # `costline route eval`: the oracle check, when asked
}


def _product_modules() -> list[tuple[str, Path]]:
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = []
    for pkg, folder in sorted(dirs.items()):
        if pkg == SIM or pkg.startswith(SIM + "."):
            continue
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join([pkg, *parts]), path))
    return out


def _names_sim(name: str | None) -> bool:
    return bool(name) and (name == SIM or name.startswith(SIM + "."))


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.stack: list[str] = []
        self.found: list[tuple[str | None, str, int]] = []  # (function, what, line)

    def _here(self) -> str | None:
        return self.stack[-1] if self.stack else None

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _names_sim(alias.name):
                self.found.append((self._here(), f"import {alias.name}", node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and (_names_sim(node.module)
                                or (node.module == "costline" and any(a.name == "sim" for a in node.names))):
            self.found.append((self._here(), f"from {node.module} import ...", node.lineno))

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and re.fullmatch(r"costline\.sim(\.\w+)*", node.value):
            self.found.append((self._here(), f"string {node.value!r}", node.lineno))


def _reaches() -> dict[tuple[str, str | None], list[str]]:
    out: dict[tuple[str, str | None], list[str]] = {}
    for module, path in _product_modules():
        finder = _Finder()
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for function, what, line in finder.found:
            out.setdefault((module, function), []).append(f"{path.relative_to(ROOT)}:{line}: {what}")
    return out


def test_the_walk_covers_the_product_and_not_the_simulation() -> None:
    modules = dict(_product_modules())
    assert {"costline.cli", "costline.serving.gateway.app", "costline.serving.pipeline", "costline.processors.processor",
            "costline.alerts.cli", "costline.distill.cli", "costline.jobs.cli"} <= set(modules)
    assert not any(m.startswith(SIM) for m in modules)


def test_the_finder_sees_module_level_and_lazy_imports() -> None:
    finder = _Finder()
    finder.visit(ast.parse("import costline.sim.traffic\nfrom costline import sim\n"
                           "def f():\n    from costline.sim.standin import StandInServer\n"
                           "X = ('costline.sim.demo', 'commands')\nimport costline.simulator\n"))
    assert [(f, line) for f, _, line in finder.found] == [(None, 1), (None, 2), ("f", 4), (None, 5)]


def test_the_product_reaches_the_simulation_only_where_allowed() -> None:
    reaches = _reaches()
    unexpected = {k: v for k, v in reaches.items() if k not in ALLOWED}
    assert not unexpected, ("product code imports costline.sim outside the allowed commands "
                            f"(move the code into sim/ or make the import lazy in a command): {unexpected}")
    stale = ALLOWED - set(reaches)
    assert not stale, f"allowed but no longer there (drop them from ALLOWED): {sorted(stale, key=str)}"


def test_importing_the_product_loads_no_simulation_module() -> None:
    code = ("import sys, costline, costline.cli, costline.serving, costline.serving.gateway.app, "
            "costline.serving.pipeline, costline.serving.routing.evaluation, costline.serving.cli, costline.alerts, "
            "costline.alerts.cli, costline.processors, costline.jobs, costline.distill, costline.dashboards; "
            "print(sorted(m for m in sys.modules if m.startswith('costline.sim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
