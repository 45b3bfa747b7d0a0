"""The layering, read from the source (AST; nothing is imported): data flows frontend → quantize →
build → report, the job runtime (worker/runtime/) and the API (service/) sit on top of the pipeline,
and the API stays TVM-free.

`python -m tests.test_layering [ROOT]` prints the import graph between packages of a checkout.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("worker", "service")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    file: str  # its path in the checkout
    target: str  # the imported module, dotted (the deepest one of ours the statement names)
    line: int
    top_level: bool  # runs when the importing module is imported (not inside a function)


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for top in SOURCES:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(body: list[ast.stmt], top_level: bool) -> list[tuple[ast.stmt, bool]]:
    """Every import statement with whether it runs at import time (TYPE_CHECKING blocks never do)."""
    found: list[tuple[ast.stmt, bool]] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, top_level))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += _walk(node.body, False)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            found += _walk(node.body, False)
            found += _walk(node.orelse, top_level)
        else:  # class bodies, if/for/while/with/try/match blocks run when their statement does
            for field in ("body", "orelse", "finalbody"):
                found += _walk(getattr(node, field, []), top_level)
            for clause in [*getattr(node, "handlers", []), *getattr(node, "cases", [])]:
                found += _walk(clause.body, top_level)
    return found


def collect(root: Path = REPO) -> dict[str, list[Import]]:
    """module -> the imports it makes (of our modules and of third-party top-level names)."""
    modules = _modules(root)
    graph: dict[str, list[Import]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imports = []
        for node, top_level in _walk(ast.parse(path.read_text()).body, True):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            file = str(path.relative_to(root))
            imports += [Import(name, file, t, node.lineno, top_level) for t in dict.fromkeys(targets)]
        graph[name] = imports
    return graph


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def tvm_at_import(graph: dict[str, list[Import]]) -> set[str]:
    """Our modules whose import (with their parent packages') loads TVM."""
    bound: set[str] = set()
    changed = True
    while changed:
        changed = False
        for module, imports in graph.items():
            if module in bound:
                continue
            loads = [t for i in imports if i.top_level for t in _parents(i.target)]
            loads += _parents(module)[:-1]
            if any(t == "tvm" or t in bound for t in loads):
                bound.add(module)
                changed = True
    return bound


def package(module: str) -> str:
    """The unit of the layering: service, worker.runtime, or worker.<module or subpackage>."""
    parts = module.split(".")
    if parts[0] != "worker":
        return parts[0]
    return ".".join(parts[:2])


def _inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


#: (what imports, what it must not import, why). Prefixes are dotted module names.
PIPELINE_EXEMPT = ("worker.runtime", "worker.cli")
RULES: tuple[tuple[str, str, str], ...] = (
    ("worker.quantize", "worker.report", "a pass imports the report"),
    ("worker.quantize", "worker.build", "a pass imports the builder (take a run-this-module function)"),
    ("worker.quantize", "worker.kernels", "a pass imports the kernels"),
    ("worker.runtime", "service", "the job runtime imports the API"),
    ("service", "worker.runtime.tasks", "the API imports the task module (send it by name)"),
    ("service", "tvm", "the API imports TVM"),
)


def violations(graph: dict[str, list[Import]], root: Path = REPO) -> list[str]:
    bound = tvm_at_import(graph)
    found = []
    for module, imports in graph.items():
        pipeline = _inside(module, "worker") and not any(_inside(module, p) for p in PIPELINE_EXEMPT)
        for i in imports:
            why = [
                why for source, target, why in RULES if _inside(module, source) and _inside(i.target, target)
            ]
            if pipeline and (_inside(i.target, "worker.runtime") or _inside(i.target, "service")):
                why.append("the pipeline imports the job runtime or the API")
            if _inside(module, "service") and i.target in bound:
                why.append("the API imports a module that loads TVM when imported")
            if why:
                found.append(f"{i.file}:{i.line}: {module} -> {i.target} ({'; '.join(why)})")
    return found


def package_graph(graph: dict[str, list[Import]]) -> dict[str, dict[str, bool]]:
    """package -> imported package -> whether some import of it runs at import time."""
    edges: dict[str, dict[str, bool]] = defaultdict(dict)
    for module, imports in graph.items():
        src = package(module)
        if src == "worker":  # the namespace package itself
            continue
        edges.setdefault(src, {})
        for i in imports:
            dst = package(i.target)
            if dst == src or not (dst in ("tvm",) or i.target.split(".")[0] in SOURCES):
                continue
            edges[src][dst] = edges[src].get(dst, False) or i.top_level
    return dict(edges)


def render(edges: dict[str, dict[str, bool]]) -> str:
    width = max(map(len, edges))
    lines = []
    for src in sorted(edges):
        targets = ", ".join(f"{d}{'' if top else ' (lazy)'}" for d, top in sorted(edges[src].items()))
        lines.append(f"{src:<{width}} -> {targets or '-'}")
    return "\n".join(lines)


def test_no_import_runs_against_the_flow() -> None:
    assert violations(collect()) == []


def test_packages_form_no_cycle() -> None:
    edges = package_graph(collect())
    try:
        order = list(TopologicalSorter({s: set(d) for s, d in edges.items()}).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle between packages: {exc.args[1]}\n{render(edges)}") from None
    assert "service" in order and "worker.runtime" in order


def test_the_checker_sees_each_kind_of_violation(tmp_path: Path) -> None:
    """The rules above can fail: a tree that breaks each one is reported line by line."""
    files = {
        "worker/__init__.py": "",
        "worker/quantize/__init__.py": "",
        "worker/quantize/calibrate.py": "from worker.build import compile_module\n"
        "def f():\n    from worker.report import verify\n",
        "worker/report/__init__.py": "",
        "worker/report/verify.py": "import tvm\n",
        "worker/build.py": "from worker.runtime import settings\n",
        "worker/runtime/__init__.py": "",
        "worker/runtime/settings.py": "",
        "worker/runtime/tasks.py": "from service import app\n",
        "service/__init__.py": "",
        "service/app.py": "from worker.runtime.tasks import TASK_NAME\nfrom worker.report.verify import x\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(collect(tmp_path))
    assert sorted(line.split(" (")[0] for line in found) == [
        "service/app.py:1: service.app -> worker.runtime.tasks",
        "service/app.py:2: service.app -> worker.report.verify",
        "worker/build.py:1: worker.build -> worker.runtime.settings",
        "worker/quantize/calibrate.py:1: worker.quantize.calibrate -> worker.build",
        "worker/quantize/calibrate.py:3: worker.quantize.calibrate -> worker.report.verify",
        "worker/runtime/tasks.py:1: worker.runtime.tasks -> service.app",
    ], found
    edges = package_graph(collect(tmp_path))
    assert edges["worker.quantize"] == {"worker.build": True, "worker.report": False}


if __name__ == "__main__":
    print(render(package_graph(collect(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO))))
