"""The package's imports run one way: cli → api → {models, prompts} → offload → core → ops → leaves.

Read with the standard library's ``ast`` from the source files (nothing is imported). Every module of
tuco_kernels must belong to a layer below; it may import modules of its own layer or lower ones, never higher;
models and prompts, side by side, do not import each other; there is no import cycle; and an import inside a
function (which could dodge a cycle) is allowed only where it is listed below with its reason. The library never
imports the research package or the tests.
"""

from __future__ import annotations

import ast
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "tuco_kernels"

# lowest first; a module belongs to the layer of its longest matching prefix
LAYERS = [
    ("leaves", ["tuco_kernels.errors", "tuco_kernels.files", "tuco_kernels._version", "tuco_kernels._build_info", "tuco_kernels._C"]),
    ("ops", ["tuco_kernels.ops"]),
    ("core", ["tuco_kernels.core"]),
    ("offload", ["tuco_kernels.offload"]),
    ("loading and prompts", ["tuco_kernels.models", "tuco_kernels.prompts"]),
    ("api", ["tuco_kernels.attach", "tuco_kernels.generate", "tuco_kernels.result", "tuco_kernels.score",
             "tuco_kernels.logprobs", "tuco_kernels.report", "tuco_kernels.dataset", "tuco_kernels.harness"]),
    ("command line", ["tuco_kernels.cli", "tuco_kernels.__main__"]),
    ("package face", ["tuco_kernels"]),
]
PEERS_APART = [("tuco_kernels.models", "tuco_kernels.prompts")]

# imports inside functions, each with why it is not at the top of its module
LAZY_ALLOWED = {
    ("tuco_kernels.ops", "tuco_kernels.ops.fused_update_triton"): "imports triton, only when the Triton backend runs",
    ("tuco_kernels.ops.extension", "tuco_kernels._build_info"): "written by setup.py; absent in an unbuilt checkout",
    ("tuco_kernels.ops.extension", "tuco_kernels._C"): "the compiled ops; absent in an unbuilt checkout",
    ("tuco_kernels.harness", "tuco_kernels.harness.lm"): "imports lm-eval (an optional extra) when LMEvalModel is used",
    ("tuco_kernels.cli.evaluating", "tuco_kernels.harness.lm"): "imports lm-eval, after tuco eval has checked it is there",
    ("tuco_kernels.cli", "tuco_kernels.cli.command"): "the commands import torch; tuco --version answers without it",
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


GENERATED = {"tuco_kernels._C", "tuco_kernels._build_info"}   # built by setup.py; absent in a fresh checkout


def is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split("."))
    return (name in GENERATED or (root.parent / rel).with_suffix(".py").is_file()
            or (root.parent / rel / "__init__.py").is_file())


def imports_of(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of the package, the research package or the
    tests in ``path``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours = ("tuco_kernels", "tuco_research", "tests")
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.split(".")[0] in ours)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] in ours:
                    for alias in child.names:
                        sub = f"{target}.{alias.name}"
                        found.append((sub if is_module(sub, root) else target, child.lineno, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def layer_of(module: str) -> int | None:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    return level


def graph(root: Path) -> dict[str, tuple[Path, list]]:
    return {module_name(p, root): (p, imports_of(p, root)) for p in sorted(root.rglob("*.py"))}


def violations(root: Path) -> list[str]:
    """Every import that runs up, crosses between peers, hides in a function unlisted, or leaves the library."""
    wrong = []
    for module, (path, imports) in graph(root).items():
        mine = layer_of(module)
        if mine is None:
            wrong.append(f"{module}: in no layer (add it to LAYERS in tests/test_architecture.py)")
            continue
        for target, line, in_function in imports:
            where = f"{path.relative_to(root.parent)}:{line} imports {target}"
            if target.split(".")[0] != "tuco_kernels":
                wrong.append(f"{where}: the library must not import the research package or the tests")
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{where}: up from {LAYERS[mine][0]} to {LAYERS[theirs][0]}")
            for a, b in PEERS_APART:
                for x, y in ((a, b), (b, a)):
                    if module.startswith(x) and (target == y or target.startswith(y + ".")):
                        wrong.append(f"{where}: {x} and {y} stand side by side and do not import each other")
            if in_function and (module, target) not in LAZY_ALLOWED:
                wrong.append(f"{where} inside a function: move it to the top (or list it in LAZY_ALLOWED with why)")
    return wrong


def cycles(root: Path) -> list[list[str]]:
    g = graph(root)
    edges = {m: sorted({t for t, _, _ in imps if t in g and t != m}) for m, (_, imps) in g.items()}
    state, stack, found = {}, [], []

    def walk(m):
        state[m] = "open"
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == "open":
                found.append(stack[stack.index(t):] + [t])
            elif t not in state:
                walk(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            walk(m)
    return found


def test_imports_run_one_way():
    assert violations(PACKAGE) == []


def test_no_import_cycle():
    assert cycles(PACKAGE) == []


def test_the_checks_can_fail(tmp_path):
    """Negative control: an upward import, a hidden import and a cycle planted in a small fake package are caught."""
    fake = tmp_path / "tuco_kernels"
    (fake / "core").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "core" / "__init__.py").write_text("")
    (fake / "core" / "engine.py").write_text("from ..score import score\n\n\ndef f():\n    from .. import cli\n")
    (fake / "score.py").write_text("from .core.engine import x\n")
    (fake / "cli.py").write_text("")
    found = violations(fake)
    assert any("core/engine.py:1 imports tuco_kernels.score: up from core to api" in w for w in found), found
    assert any("core/engine.py:5 imports tuco_kernels.cli inside a function" in w for w in found), found
    assert cycles(fake) == [["tuco_kernels.core.engine", "tuco_kernels.score", "tuco_kernels.core.engine"]]
