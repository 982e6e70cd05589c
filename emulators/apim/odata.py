"""The slice of OData `$filter` that API Management accepts: clauses joined by `and`.

Clause forms: `field op value` with op in eq, ne, gt, ge, lt, le, and the functions
`contains(field, 'x')`, `startswith(field, 'x')`, `endswith(field, 'x')`. Values are quoted strings
('' escapes a quote), `datetime'...'`, numbers, true/false/null.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class FilterError(ValueError):
    """A `$filter` the emulator (like APIM) cannot evaluate; the message says what is wrong."""


@dataclass(frozen=True)
class Clause:
    field: str
    op: str  # eq ne gt ge lt le contains startswith endswith
    value: Any


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<datetime>datetime'(?P<dtv>[^']*)')
    | (?P<string>'(?P<sv>(?:[^']|'')*)')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_./]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {"contains", "startswith", "endswith", "substringof"}


def parse_datetime(text: str) -> datetime:
    """ISO 8601 as OData sends it; a value without an offset is UTC, as in APIM."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(f"'{text}' is not an ISO 8601 date-time such as 2024-06-01T00:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise FilterError(f"cannot read $filter at position {pos}: {text[pos : pos + 20]!r}")
        pos = match.end()
        if match.group("datetime"):
            out.append(("value", parse_datetime(match.group("dtv"))))
        elif match.group("string") is not None:
            out.append(("value", match.group("sv").replace("''", "'")))
        elif match.group("number"):
            num = match.group("number")
            out.append(("value", float(num) if "." in num else int(num)))
        elif match.group("punct"):
            out.append(("punct", match.group("punct")))
        else:
            word = match.group("word")
            lowered = word.lower()
            if lowered in ("true", "false"):
                out.append(("value", lowered == "true"))
            elif lowered == "null":
                out.append(("value", None))
            else:
                out.append(("word", word))
    return out


def parse_filter(text: str | None) -> list[Clause]:
    """Clauses of a conjunction; an empty or missing filter is no clause."""
    if not text or not text.strip():
        return []
    toks = _tokens(text)
    clauses: list[Clause] = []
    i = 0

    def expect(kind: str, value: str | None = None) -> Any:
        nonlocal i
        if i >= len(toks) or toks[i][0] != kind or (value is not None and toks[i][1] != value):
            got = toks[i][1] if i < len(toks) else "end of filter"
            raise FilterError(f"invalid $filter: expected {value or kind} but found {got!r}")
        i += 1
        return toks[i - 1][1]

    while True:
        word = expect("word")
        if word.lower() in _FUNCTIONS:
            expect("punct", "(")
            if word.lower() == "substringof":  # substringof('x', field)
                value = expect("value")
                expect("punct", ",")
                field = expect("word")
                func = "contains"
            else:
                field = expect("word")
                expect("punct", ",")
                value = expect("value")
                func = word.lower()
            expect("punct", ")")
            clauses.append(Clause(field, func, value))
        else:
            op = expect("word").lower()
            if op not in _COMPARISONS:
                raise FilterError(f"invalid $filter: unsupported operator {op!r}; use one of {sorted(_COMPARISONS)}")
            clauses.append(Clause(word, op, expect("value")))
        if i >= len(toks):
            return clauses
        joiner = expect("word")
        if joiner.lower() != "and":
            raise FilterError(f"invalid $filter: only 'and' joins clauses here, found {joiner!r}")


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op in ("contains", "startswith", "endswith"):
        if actual is None:
            return False
        a, e = str(actual).lower(), str(expected).lower()
        return {"contains": e in a, "startswith": a.startswith(e), "endswith": a.endswith(e)}[op]
    if isinstance(actual, str) and isinstance(expected, str):
        actual, expected = actual.lower(), expected.lower()  # APIM string filters ignore case
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if actual is None or expected is None:
        return False
    try:
        return bool(
            {"gt": actual > expected, "ge": actual >= expected, "lt": actual < expected, "le": actual <= expected}[op]
        )
    except TypeError:
        raise FilterError(f"invalid $filter: cannot compare {actual!r} with {expected!r}") from None


def matcher(clauses: list[Clause], fields: dict[str, Callable[[Any], Any]]) -> Callable[[Any], bool]:
    """A predicate over resources; `fields` maps each filterable name to a getter."""
    lowered = {name.lower(): getter for name, getter in fields.items()}
    for clause in clauses:
        if clause.field.lower() not in lowered:
            raise FilterError(
                f"invalid $filter: field {clause.field!r} cannot be filtered; supported: {sorted(fields)}"
            )

    def predicate(item: Any) -> bool:
        return all(_compare(lowered[c.field.lower()](item), c.op, c.value) for c in clauses)

    return predicate
