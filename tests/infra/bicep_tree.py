"""Read Bicep files with the real Bicep grammar (tree-sitter-bicep) for the infra checks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tree_sitter
import tree_sitter_bicep

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))

Node = tree_sitter.Node


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse(source: bytes) -> tree_sitter.Tree:
    return _PARSER.parse(source)


@cache
def parse_file(path: Path) -> tree_sitter.Tree:
    return parse(path.read_bytes())


def syntax_errors(source: bytes, filename: str) -> list[str]:
    """`file:line:col: ...` for every ERROR or MISSING node; empty when the file parses cleanly."""
    problems: list[str] = []

    def walk(node: Node) -> None:
        line, col = node.start_point.row + 1, node.start_point.column + 1
        if node.is_missing:
            problems.append(f"{filename}:{line}:{col}: missing {node.type!r}")
        elif node.is_error:
            snippet = text(node).splitlines()[0][:60] if text(node) else ""
            problems.append(f"{filename}:{line}:{col}: syntax error near {snippet!r}")
        if node.has_error:
            for child in node.children:
                walk(child)

    walk(parse(source).root_node)
    return problems


def text(node: Node | None) -> str:
    """The node's source text; "" for a node that is not there (so a comparison with it fails)."""
    return (node.text or b"").decode("utf-8") if node is not None else ""


def line_of(node: Node) -> int:
    return node.start_point.row + 1


def string_value(node: Node | None) -> str | None:
    """The value of a plain string literal (no interpolation), else None."""
    if node is None or node.type != "string":
        return None
    if any(child.type == "interpolation" for child in node.named_children):
        return None
    return "".join(text(c) for c in node.named_children if c.type in ("string_content", "escape_sequence"))


def _key(prop: Node) -> str | None:
    key = prop.named_children[0] if prop.named_children else None
    if key is None:
        return None
    if key.type == "identifier":
        return text(key)
    if key.type == "string":
        return string_value(key)
    return None


def properties(obj: Node | None) -> dict[str, Node]:
    """Key -> value node of an object literal's direct properties."""
    result: dict[str, Node] = {}
    if obj is None or obj.type != "object":
        return result
    for prop in obj.named_children:
        if prop.type != "object_property" or len(prop.named_children) < 2:
            continue
        name = _key(prop)
        if name is not None:
            result[name] = prop.named_children[-1]
    return result


def get_path(obj: Node | None, *path: str) -> Node | None:
    """Follow nested object properties, e.g. get_path(body, 'properties', 'siteConfig')."""
    node = obj
    for name in path:
        node = properties(node).get(name)
        if node is None:
            return None
    return node


@dataclass(frozen=True)
class Declaration:
    """A `resource` or `module` declaration, top-level or nested in another resource."""

    file: Path
    kind: str  # "resource" or "module"
    symbol: str
    type: str  # 'Microsoft.Web/sites@2024-04-01', a nested child type like 'config', or a module path
    body: Node | None  # the object literal, also for `if (...)` and `[for ...]` forms
    node: Node
    existing: bool
    parent_type: str | None  # type of the enclosing resource, for nested declarations

    @property
    def resource_type(self) -> str:
        """Full type without API version, also for nested children ('Microsoft.Web/sites/config')."""
        own = self.type.split("@", 1)[0]
        if self.parent_type is not None and "/" not in own:
            return f"{self.parent_type.split('@', 1)[0]}/{own}"
        return own

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{line_of(self.node)}"


def _body(decl: Node) -> Node | None:
    for child in decl.named_children:
        if child.type == "object":
            return child
        if child.type in ("if_statement", "for_statement", "array"):
            found = _find_object(child)
            if found is not None:
                return found
    return None


def _find_object(node: Node) -> Node | None:
    for child in node.named_children:
        if child.type == "object":
            return child
        if child.type in ("for_statement", "if_statement"):
            found = _find_object(child)
            if found is not None:
                return found
    return None


def declarations(path: Path) -> list[Declaration]:
    """Every resource and module declaration in a file, nested ones included."""
    found: list[Declaration] = []

    def visit(node: Node, parent_type: str | None) -> None:
        for child in node.named_children:
            if child.type in ("resource_declaration", "module_declaration"):
                names = [c for c in child.named_children if c.type == "identifier"]
                type_node = next((c for c in child.named_children if c.type == "string"), None)
                decl = Declaration(
                    file=path,
                    kind="resource" if child.type == "resource_declaration" else "module",
                    symbol=text(names[0]) if names else "",
                    type=string_value(type_node) or "",
                    body=_body(child),
                    node=child,
                    existing=any(not c.is_named and text(c) == "existing" for c in child.children),
                    parent_type=parent_type,
                )
                found.append(decl)
                if decl.body is not None:
                    visit_object(decl.body, decl.type if decl.kind == "resource" else None)

    def visit_object(obj: Node, parent_type: str | None) -> None:
        for prop in obj.named_children:
            if prop.type == "object_property":
                visit(prop, parent_type)

    visit(parse_file(path).root_node, None)
    return found


def all_declarations() -> Iterator[Declaration]:
    for path in bicep_files():
        yield from declarations(path)


def top_level(path: Path, node_type: str) -> Iterator[Node]:
    for child in parse_file(path).root_node.named_children:
        if child.type == node_type:
            yield child


def variables(path: Path) -> dict[str, Node]:
    result: dict[str, Node] = {}
    for decl in top_level(path, "variable_declaration"):
        named = decl.named_children
        if len(named) >= 2 and named[0].type == "identifier":
            result[text(named[0])] = named[-1]
    return result


@dataclass(frozen=True)
class Param:
    name: str
    secure: bool
    default: Node | None
    node: Node


def params(path: Path) -> dict[str, Param]:
    """Parameter declarations with whether they carry @secure() and their default value."""
    result: dict[str, Param] = {}
    pending_decorators: list[str] = []
    for child in parse_file(path).root_node.named_children:
        if child.type == "decorators":
            pending_decorators.extend(text(d) for d in child.named_children)
            continue
        if child.type == "parameter_declaration":
            named = child.named_children
            name = text(named[0])
            has_default = len(named) >= 3 and named[1].type == "type"
            result[name] = Param(
                name=name,
                secure=any(d.startswith("@secure(") for d in pending_decorators),
                default=named[-1] if has_default else None,
                node=child,
            )
        pending_decorators = []
    return result


def resolve_string(node: Node | None, path: Path) -> str | None:
    """Statically evaluate a string expression: literals, variables, object members and
    subscriptionResourceId(...)/resourceId(...) (their last argument). None when not static."""
    if node is None:
        return None
    if node.type == "string":
        return string_value(node)
    if node.type == "identifier":
        return resolve_string(variables(path).get(text(node)), path)
    if node.type == "member_expression":
        obj, prop = node.named_children[0], node.named_children[-1]
        target = obj
        if obj.type == "identifier":
            target = variables(path).get(text(obj))  # type: ignore[assignment]
        return resolve_string(properties(target).get(text(prop)), path) if target is not None else None
    if node.type == "call_expression":
        function = text(node.named_children[0])
        args = node.named_children[-1].named_children if len(node.named_children) > 1 else []
        if function in ("subscriptionResourceId", "resourceId", "tenantResourceId") and args:
            return resolve_string(args[-1], path)
    return None
