"""Stripe's search query language, the subset the app uses: `field:'v'` clauses joined by AND.

Search lags writes, as Stripe documents (docs.stripe.com/search, "Data freshness"): "Don't use
search for read-after-write flows ... Under normal operating conditions, data is searchable in
under 1 minute." The emulator matches each object as it was `search_lag_seconds` ago by the
emulator's clock (`Core.indexed`): a new object is not found until then, and an updated one is
found by its old values until then (returned as it is now, a guess). The list endpoints are
immediate.
"""

from __future__ import annotations

import re
from typing import Any

from emulators.stripe.core import Core
from emulators.stripe.wire import invalid

_CLAUSE = re.compile(
    r"""\s*(?:(?P<meta>metadata\[(?P<q>['"])(?P<key>.+?)(?P=q)\])|(?P<field>[a-z_]+))"""
    r"""\s*(?P<op>[:~])\s*(?P<vq>['"])(?P<value>.*?)(?P=vq)\s*"""
)


def parse(query: str, fields: set[str]) -> list[tuple[str | None, str, str, str]]:
    """Clauses as (metadata key or None, field, operator, value); refuses what it does not support."""
    clauses = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        if re.search(r"\sOR\s", part):
            raise invalid("query", "The emulator's search supports AND-joined clauses only, not OR.")
        found = _CLAUSE.fullmatch(part)
        if not found:
            raise invalid("query", f"Could not parse the search clause {part!r}; expected field:'value'.")
        if found["meta"]:
            clauses.append((found["key"], "metadata", found["op"], found["value"]))
            continue
        if found["field"] not in fields:
            raise invalid("query", f"Field {found['field']!r} is not searchable here; use one of {sorted(fields)}.")
        clauses.append((None, found["field"], found["op"], found["value"]))
    return clauses


def matches(obj: dict[str, Any], clauses: list[tuple[str | None, str, str, str]]) -> bool:
    for key, name, op, value in clauses:
        raw = (obj.get("metadata") or {}).get(key) if key is not None else obj.get(name)
        text = ("true" if raw else "false") if isinstance(raw, bool) else ("" if raw is None else str(raw))
        if op == ":" and text.lower() != value.lower():
            return False
        if op == "~" and value.lower() not in text.lower():
            return False
    return True


def find(core: Core, kind: str, clauses: list[tuple[str | None, str, str, str]]) -> list[dict[str, Any]]:
    """Objects of a kind whose indexed version matches, newest first."""
    found = []
    for obj in core.store.all(kind):
        seen = core.indexed(obj)
        if seen is not None and matches(seen, clauses):
            found.append(obj)
    return found[::-1]


def result(objects: list[dict[str, Any]], url: str, limit: int) -> dict[str, Any]:
    return {
        "object": "search_result",
        "data": objects[:limit],
        "has_more": len(objects) > limit,
        "next_page": None,
        "total_count": len(objects),
        "url": url,
    }
