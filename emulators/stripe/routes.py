"""The route table: (method, path pattern) -> handler, filled by the resource modules."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emulators.stripe.core import Core


@dataclass
class Request:
    core: Core
    method: str
    path: str
    args: tuple[str, ...]
    params: dict[str, Any]
    body_json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Any]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []
_ID = r"([^/]+)"


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    """Register a handler; `{id}` in the pattern captures one path segment."""
    regex = re.compile("^" + pattern.replace("{id}", _ID) + "$")

    def register(fn: Handler) -> Handler:
        ROUTES.append((method, regex, fn))
        return fn

    return register


def match(method: str, path: str) -> tuple[Handler, tuple[str, ...]] | bool | None:
    """The handler and its path arguments; False when the path exists under another method."""
    other_method = False
    # Literal paths (e.g. /v1/customers/search) win over patterns with an {id} segment.
    for verb, regex, fn in sorted(ROUTES, key=lambda r: r[1].groups):
        found = regex.match(path)
        if found:
            if verb == method:
                return fn, found.groups()
            other_method = True
    return False if other_method else None
