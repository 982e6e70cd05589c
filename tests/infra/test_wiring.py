"""What a Bicep compiler would reject between files: modules given parameters they do not declare,
missing required parameters, and outputs that a module does not have."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from tests.infra.bicep_tree import (
    INFRA,
    Declaration,
    Node,
    all_declarations,
    get_path,
    params,
    parse_file,
    properties,
    text,
    top_level,
)


def module_file(decl: Declaration) -> Path:
    return (decl.file.parent / decl.type).resolve()


def outputs(path: Path) -> set[str]:
    names = set()
    for output in top_level(path, "output_declaration"):
        first = output.named_children[0]
        names.add(text(first))
    return names


def modules() -> list[Declaration]:
    return [d for d in all_declarations() if d.kind == "module"]


def test_module_files_exist() -> None:
    assert modules()
    for decl in modules():
        assert module_file(decl).is_file(), f"{decl.where}: module file {decl.type} does not exist"


def test_modules_get_exactly_the_parameters_they_declare() -> None:
    problems = []
    for decl in modules():
        declared = params(module_file(decl))
        given = set(properties(get_path(decl.body, "params")))
        unknown = given - set(declared)
        required = {name for name, p in declared.items() if p.default is None}
        if unknown:
            problems.append(f"{decl.where}: {decl.type} declares no parameter(s) {sorted(unknown)}")
        if required - given:
            problems.append(f"{decl.where}: {decl.type} needs parameter(s) {sorted(required - given)}")
    assert not problems, "\n".join(problems)


def test_module_outputs_used_exist() -> None:
    problems = []
    for path in {d.file for d in modules()}:
        source = path.read_text(encoding="utf-8")
        by_symbol = {d.symbol: d for d in modules() if d.file == path}
        for symbol, output in re.findall(r"\b([A-Za-z_]\w*)\.outputs\.([A-Za-z_]\w*)", source):
            decl = by_symbol.get(symbol)
            if decl is None:
                problems.append(f"{path.name}: {symbol}.outputs.{output} refers to no module")
            elif output not in outputs(module_file(decl)):
                problems.append(f"{path.name}: {decl.type} has no output {output!r}")
    assert not problems, "\n".join(problems)


def test_identifiers_used_in_a_file_are_declared_in_it() -> None:
    """Catches a renamed param/var/resource left behind (Bicep's BCP057)."""
    builtin = {
        "az",
        "sys",
        "true",
        "false",
        "null",
        "existing",
        "if",
        "for",
        "in",
        "resource",
        "module",
        "param",
        "var",
        "output",
        "string",
        "int",
        "bool",
        "object",
        "array",
        "targetScope",
    }
    problems = []
    for path in sorted({d.file for d in all_declarations()}):
        root_children = _root(path).named_children
        declared = {
            text(c.named_children[0])
            for c in root_children
            if c.type
            in (
                "parameter_declaration",
                "variable_declaration",
                "output_declaration",
                "resource_declaration",
                "module_declaration",
            )
        }
        declared |= {d.symbol for d in all_declarations() if d.file == path}
        for node in _identifiers_in_expressions(_root(path)):
            name = text(node)
            if name not in declared and name not in builtin and not _is_loop_variable(node, name):
                problems.append(f"{path.name}:{node.start_point.row + 1}: {name!r} is not declared")
    assert not problems, "\n".join(problems)


def _root(path: Path) -> Node:
    return parse_file(path).root_node


def _identifiers_in_expressions(root: Node) -> Iterator[Node]:
    """Identifiers used as values (not property keys, function names or declaration names)."""
    stack = [root]
    while stack:
        node = stack.pop()
        stack.extend(node.named_children)
        if node.type != "identifier" or node.parent is None:
            continue
        parent = node.parent
        first = parent.named_children[0] if parent.named_children else None
        if parent.type in ("object_property", "call_expression") and first is not None and first.id == node.id:
            continue  # a property key or a function name
        if parent.type.endswith("_declaration") and first is not None and first.id == node.id:
            continue  # the declared name itself
        if parent.type == "for_statement" and first is not None and first.id == node.id:
            continue  # the loop variable
        if parent.type in ("type", "decorator"):
            continue
        yield node


def _is_loop_variable(node: Node, name: str) -> bool:
    current = node.parent
    while current is not None:
        if current.type == "for_statement" and text(current.named_children[0]) == name:
            return True
        current = current.parent
    return False


def test_loaded_json_files_exist_and_have_the_keys_used() -> None:
    problems = []
    for path in sorted({d.file for d in all_declarations()}):
        source = path.read_text(encoding="utf-8")
        for var, relative in re.findall(r"var (\w+) = loadJsonContent\('([^']+)'\)", source):
            target = (path.parent / relative).resolve()
            if not target.is_file():
                problems.append(f"{path.name}: loadJsonContent target {relative} does not exist")
                continue
            keys = set(json.loads(target.read_text(encoding="utf-8")))
            for key in re.findall(rf"\b{var}\.(\w+)", source):
                if key not in keys:
                    problems.append(f"{path.name}: {relative} has no key {key!r}")
    assert not problems, "\n".join(problems)


def test_app_tables_and_queues_come_from_the_generated_list() -> None:
    storage = next(d for d in modules() if d.type == "modules/storage.bicep")
    given = properties(get_path(storage.body, "params"))
    assert text(given["tableNames"]) == "appStorage.tables"
    assert text(given["queueNames"]) == "appStorage.queues"
    assert "var appStorage = loadJsonContent('app-storage.json')" in (INFRA / "main.bicep").read_text()
