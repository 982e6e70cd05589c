"""ARM wire helpers: error bodies, id forms, paging links, date formatting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from emulators.apim.httpbase import Request, Response

T = TypeVar("T")
API_VERSION = "2024-05-01"
DEFAULT_PAGE = 100


class ArmError(Exception):
    """Raised anywhere in a handler; becomes ARM's `{"error": {...}}` answer."""

    def __init__(
        self, status: int, code: str, message: str, target: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.target, self.detail = status, code, message, target, detail

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["details"] = [{"code": self.code, "target": self.target, "message": self.detail or self.message}]
        return Response.json({"error": error}, self.status)


def validation(target: str, message: str) -> ArmError:
    return ArmError(400, "ValidationError", f"{target}: {message}", target)


def incorrect_values(target: str, detail: str) -> ArmError:
    """APIM's own validation envelope, as real answers show it (e.g. Azure/apiops#343):
    {"code": "ValidationError", "message": "One or more fields contain incorrect values:", "details": [...]}."""
    return ArmError(400, "ValidationError", "One or more fields contain incorrect values:", target, detail)


def not_found(kind: str, name: str) -> ArmError:
    return ArmError(404, "ResourceNotFound", f"{kind} '{name}' not found.")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: Any, target: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise validation(target, "must be an ISO 8601 date-time string such as 2024-06-01T00:00:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise validation(target, f"'{value}' is not an ISO 8601 date-time such as 2024-06-01T00:00:00Z") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def relative_id(value: str, collection: str, service_id: str) -> str | None:
    """The name in "/{collection}/{name}" or in the full resource id form; None if neither."""
    lowered, prefix = value.lower(), service_id.lower()
    rest = value[len(prefix) :] if lowered.startswith(prefix) else value
    parts = rest.strip("/").split("/")
    if len(parts) == 2 and parts[0].lower() == collection.lower() and parts[1]:
        return parts[1]
    return None


def paging(req: Request) -> tuple[int, int]:
    def number(name: str, minimum: int, default: int) -> int:
        raw = req.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise validation(name, f"must be a whole number, not '{raw}'") from None
        if value < minimum:
            raise validation(name, f"must be at least {minimum}, not {value}")
        return value

    return number("$top", 1, DEFAULT_PAGE), number("$skip", 0, 0)


def page(
    req: Request,
    items: Sequence[T],
    top: int,
    skip: int,
    render: Callable[[T], Any],
    *,
    last_link: str | None = None,
) -> dict[str, Any]:
    """One page of `items` with `count` and an absolute `nextLink` carrying the same query.

    Only the page is rendered, so listing 100,000 resources costs one page of JSON per call.
    On the last page `nextLink` is `last_link` (omitted when None).
    """
    body: dict[str, Any] = {"value": [render(item) for item in items[skip : skip + top]], "count": len(items)}
    if skip + top < len(items):
        query = {k: v for k, v in req.query.items() if k not in ("$top", "$skip")}
        query.update({"$top": str(top), "$skip": str(skip + top)})
        body["nextLink"] = f"{req.base_url}{req.path}?{urlencode(query)}"
    elif last_link is not None:
        body["nextLink"] = last_link
    return body
