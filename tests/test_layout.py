"""The layout's rules, checked on the static import graph of functions/nixery (every import,
lazy ones included):

- the registry side (the front, access control, the Cloud Function's wiring) reaches the build
  side only through the build contract, nixery.build.contract;
- the build side never reaches the registry side, the cloud wiring or `nixery serve`;
- the shared modules (settings, errors, OCI digests, the Index and Storage seams, util) reach
  neither side;
- the Cloud Function's import closure holds no Nix, layering or compression code.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE_ROOT = REPO / "functions"
CONTRACT = "nixery.build.contract"
BUILD_SIDE = ("nixery.build",)
REGISTRY_SIDE = (
    "nixery.registry",
    "nixery.auth",
    "nixery.cloud.function",
    "nixery.cloud.remote",
    "nixery.cloud.clients",
    "nixery.cloud.signing",
    "nixery.cloud.idtoken",
)
SHARED = (
    "nixery.config",
    "nixery.errors",
    "nixery.oci",
    "nixery.index",
    "nixery.storage",
    "nixery.util",
)
DEPLOYMENT_WIRING = ("nixery.registry", "nixery.cloud", "nixery.local", "nixery.auth", "nixery.cli")
# Third-party modules that only the builder needs (compression, layering, `nixery serve`).
BUILDER_ONLY_LIBRARIES = ("isal", "networkx", "gunicorn")
# The Cloud Function's build entry point, whose imports are the builder's, not the function's.
FUNCTION_BUILD_ENTRY = "_build_service"


def _within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file, for every module of the nixery package under `root`."""
    modules = {}
    for path in (root / "nixery").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(tree: ast.AST, modules: dict[str, Path], skip_function: str = "") -> set[str]:
    """The modules a syntax tree imports: nixery modules by their full name (`from nixery.x
    import y` counts y when y is a module), other libraries by their top-level name."""
    found: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef) and node.name == skip_function:
            continue
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            targets = [name for name in submodules if name in modules]
            if len(targets) < len(submodules):  # some names are attributes of the module
                targets.append(node.module)
        else:
            continue
        for target in targets:
            if target.split(".")[0] != "nixery":
                found.add(target.split(".")[0])
            elif target in modules:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    return {
        name: imports_of(ast.parse(path.read_text()), modules) for name, path in modules.items()
    }


def closure(graph: dict[str, set[str]], roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        pending.extend(graph.get(module, ()))
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parts = module.split(".")
        pending.extend(".".join(parts[:depth]) for depth in range(1, len(parts)))
    return seen


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            if not target.startswith("nixery"):
                continue
            if (
                _within(module, REGISTRY_SIDE)
                and _within(target, BUILD_SIDE)
                and not _within(target, (CONTRACT,))
            ):
                found.append(f"{module} imports {target}: the registry side uses only {CONTRACT}")
            if _within(module, BUILD_SIDE) and _within(target, DEPLOYMENT_WIRING):
                found.append(f"{module} imports {target}: the build side never reaches it")
            if _within(module, SHARED) and not _within(target, SHARED):
                found.append(f"{module} imports {target}: shared modules reach neither side")
            if module == CONTRACT and not _within(target, ("nixery.index",)):
                found.append(f"{module} imports {target}: the contract stands on the Index alone")
    return found


def function_closure(root: Path) -> set[str]:
    """Everything the Cloud Function's registry entry point imports, transitively."""
    graph = import_graph(root)
    main = ast.parse((root / "main.py").read_text())
    entry = imports_of(main, module_files(root), skip_function=FUNCTION_BUILD_ENTRY)
    return closure(graph, entry)


def test_every_module_belongs_to_a_side_or_is_shared() -> None:
    for module in import_graph(PACKAGE_ROOT):
        assert module in ("nixery", "nixery.__main__") or _within(
            module, (*BUILD_SIDE, *REGISTRY_SIDE, *SHARED, *DEPLOYMENT_WIRING)
        ), f"{module}: add it to a side in tests/test_layout.py"


def test_the_import_rules_hold() -> None:
    assert violations(import_graph(PACKAGE_ROOT)) == []


def test_the_function_imports_no_nix_layering_or_compression() -> None:
    reached = function_closure(PACKAGE_ROOT)
    assert "nixery.cloud.function" in reached and CONTRACT in reached
    build_modules = {m for m in reached if _within(m, BUILD_SIDE) and m != CONTRACT}
    assert build_modules <= {"nixery.build"}, build_modules
    assert not {m for m in reached if _within(m, ("nixery.local",))}
    assert not reached & set(BUILDER_ONLY_LIBRARIES)


def _write(root: Path, module: str, source: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.parents:
        if parent == root:
            break
        (parent / "__init__.py").touch()
    path.write_text(source)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("nixery.registry.bad", "from nixery.build.nix import Nix\n", "registry side uses only"),
        (
            "nixery.registry.lazy",
            "def f():\n    from nixery.build import layers\n",
            "registry side uses only",
        ),
        ("nixery.build.bad", "import nixery.registry.api\n", "build side never reaches"),
        ("nixery.util.bad", "from nixery.build.contract import Builder\n", "shared modules"),
    ],
)
def test_the_checker_catches_violations(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    for name in ("nixery.build.contract", "nixery.build.nix", "nixery.build.layers"):
        _write(tmp_path, name, "")
    _write(tmp_path, "nixery.registry.api", "")
    _write(tmp_path, module, source)
    found = violations(import_graph(tmp_path))
    assert len(found) == 1 and expected in found[0], found


def test_the_checker_follows_the_function_closure(tmp_path: Path) -> None:
    _write(tmp_path, "nixery.cloud.function", "from nixery.registry import api\n")
    _write(tmp_path, "nixery.registry.api", "import isal\n")
    _write(tmp_path, "nixery.cloud.builder", "from nixery.build import layers\n")
    _write(tmp_path, "nixery.build.layers", "")
    (tmp_path / "main.py").write_text(
        "def _registry_api():\n    from nixery.cloud import function\n"
        "def _build_service():\n    from nixery.cloud import builder\n"
    )
    reached = function_closure(tmp_path)
    assert "isal" in reached and "nixery.build.layers" not in reached
