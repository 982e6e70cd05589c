"""Matching request paths against Azure Functions route templates (`orders/{id}`, `{*rest}`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import Pattern

_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}?]+)?(\?)?\}")


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    pattern: Pattern[str]

    @classmethod
    def compile(cls, template: str) -> RouteTemplate:
        regex, pos = "", 0
        for match in _PARAM.finditer(template):
            regex += re.escape(template[pos : match.start()])
            catch_all, name, optional = match.group(1), match.group(2), match.group(3)
            body = ".*" if catch_all else "[^/]+"
            regex += f"(?P<{name}>{body}){'?' if optional else ''}"
            pos = match.end()
        regex += re.escape(template[pos:])
        return cls(template, re.compile(f"^{regex}/?$"))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}
