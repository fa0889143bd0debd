"""The layout's rules, checked on the source: one-way imports, no cycles, pure transforms and
models, no private names across modules, modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "rayapp"
MAX_LINES = 350


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(tree: ast.AST, module: str, is_pkg: bool) -> set[tuple[str, tuple[str, ...]]]:
    """``(imported module, names)`` for every import outside ``if TYPE_CHECKING:`` (lazy ones included)."""
    found: set[tuple[str, tuple[str, ...]]] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    found.add((a.name, ()))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                found.add((base, tuple(a.name for a in child.names)))
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[tuple[str, tuple[str, ...]]]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        out[name] = _runtime_imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
    return out


def _resolve(target: str, names: tuple[str, ...], modules: set[str]) -> set[str]:
    """The rayapp modules an import statement loads (``from pkg import mod`` names a module too)."""
    hits = {target} & modules
    hits |= {f"{target}.{n}" for n in names if f"{target}.{n}" in modules}
    return hits


GRAPH = _graph()
MODULES = set(GRAPH)


def test_the_walk_sees_the_library() -> None:
    assert {"rayapp.settings", "rayapp.catalog", "rayapp.lake", "rayapp.publish.run", "rayapp.sinks.postgres"} <= MODULES
    assert ("rayapp.catalog", ("SILVER",)) in GRAPH["rayapp.pipelines.gold"] or any(
        t == "rayapp.catalog" for t, _ in GRAPH["rayapp.pipelines.gold"]
    )


def test_rayapp_never_imports_jobs_or_serve() -> None:
    bad = sorted((m, t) for m, imps in GRAPH.items() for t, _ in imps if t.split(".")[0] in ("jobs", "serve"))
    assert bad == []


def test_no_import_cycles() -> None:
    edges = {m: set().union(*(_resolve(t, n, MODULES) for t, n in imps)) - {m} for m, imps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            dfs(m)
    assert cycles == []


@pytest.mark.parametrize("package", ["rayapp.transforms", "rayapp.models"])
def test_pure_packages_import_no_ray_io_or_settings(package: str) -> None:
    forbidden = ("ray", "rayapp.settings", "rayapp.lake", "rayapp.ledger", "rayapp.sinks", "rayapp.publish", "rayapp.pipelines", "os", "pathlib")
    bad = sorted(
        (m, t) for m, imps in GRAPH.items() if m.startswith(package)
        for t, _ in imps if any(t == f or t.startswith(f + ".") for f in forbidden)
    )  # fmt: skip
    assert bad == []


def test_no_module_imports_another_modules_private_names() -> None:
    bad = sorted(
        (m, t, n) for m, imps in GRAPH.items() for t, names in imps if t.startswith("rayapp")
        for n in names if n.startswith("_") and n != "__version__"
    )  # fmt: skip
    assert bad == []


def test_library_modules_stay_readable() -> None:
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_every_table_is_defined_in_the_catalog_only() -> None:
    """Table names appear as string literals only in the catalog."""
    names = ("bronze/transactions", "silver/transactions", "silver/predictions", "quarantine/transactions",
             "gold/daily_account_activity", "gold/merchant_daily_stats", "_ledger/runs")  # fmt: skip
    bad = sorted(
        str(p.relative_to(REPO)) for p in PKG.rglob("*.py") if p.name != "catalog.py"
        for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Constant) and node.value in names
    )  # fmt: skip
    assert bad == []
