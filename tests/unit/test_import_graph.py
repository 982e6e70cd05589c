"""The import graph of `billing/`: each layer imports only what is below it.

Read statically from the source (every `import`, also inside functions, except under
`if TYPE_CHECKING:`), so a lazy import cannot hide a dependency:
- core (the models, the pricing engine, the policy, the domain records, the settings, and telemetry
  through the vendor-neutral OpenTelemetry API) imports nothing of the app but core, and no SDK;
- services (access, usage, portal, catalog, ops) import no SDK and no adapter: they talk to the
  outside through their ports;
- adapters (`adapters/`, `store/`) import no entry point and not the composition root;
- only entry points (Functions, the CLI and its commands) and the composition root build adapters.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "billing"
SDKS = ("azure", "stripe", "requests", "urllib3", "msal")

CORE = {
    "billing.models",
    "billing.pricing",
    "billing.policy",
    "billing.catalog_names",
    "billing.records",
    "billing.model_loader",
    "billing.config",
    "billing.telemetry",
}
# The status command's readers are the CLI's: they read through the composition root.
ENTRY_POINTS = (
    "billing.functions",
    "billing.cli",
    "billing.__main__",
    "billing.bootstrap",
    "billing.ops.readers",
    "billing.catalog.wiring",
)
ADAPTERS = ("billing.adapters", "billing.store")
SERVICES = ("billing.access", "billing.usage", "billing.portal", "billing.catalog", "billing.ops")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """Every module this file imports at run time (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from billing import x`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {
    name: {i for i in _imports(path) if i in MODULES or i.split(".")[0] in SDKS} for name, path in MODULES.items()
}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _closure(name: str) -> set[str]:
    """What importing `name` loads, following the app's own modules."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        for imported in IMPORTS.get(current, set()):
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def _sdk(name: str) -> bool:
    return name.split(".", maxsplit=1)[0] in SDKS


def test_the_layers_are_known() -> None:
    unplaced = [
        m for m in MODULES if m != "billing" and m not in CORE and not _within(m, ENTRY_POINTS + ADAPTERS + SERVICES)
    ]
    assert unplaced == [], "place each module in a layer of this test"


@pytest.mark.parametrize("module", sorted(CORE & set(MODULES)))
def test_core_imports_only_core_and_no_sdk(module: str) -> None:
    loaded = _closure(module)
    assert sorted(m for m in loaded if _sdk(m)) == []
    assert sorted(m for m in loaded if m in MODULES and m not in CORE and m != "billing") == []


@pytest.mark.parametrize(
    "module",
    sorted(m for m in MODULES if _within(m, SERVICES) and not m.endswith(".commands") and not _within(m, ENTRY_POINTS)),
)
def test_services_import_no_sdk_and_no_adapter(module: str) -> None:
    loaded = _closure(module)
    assert sorted(m for m in loaded if _sdk(m)) == [], "a service reaches the outside through its ports"
    assert sorted(m for m in loaded if _within(m, ADAPTERS + ENTRY_POINTS)) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, ADAPTERS)))
def test_adapters_import_no_entry_point(module: str) -> None:
    assert sorted(m for m in _closure(module) if _within(m, ENTRY_POINTS)) == []


def test_the_graph_is_read() -> None:
    """The reader sees what it must: a lazy import, a `from billing import x`, and not TYPE_CHECKING."""
    assert "billing.bootstrap" in IMPORTS["billing.catalog.commands"]
    assert "billing.adapters.stripe_client" in _closure("billing.bootstrap")
    assert "stripe" not in IMPORTS["billing.bootstrap"]  # only under TYPE_CHECKING there
