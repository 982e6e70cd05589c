"""v2 core: event destinations (webhook endpoints for thin or snapshot events) and thin events.

Thin events (`v2.core.event`) are delivered to event destinations with `event_payload: "thin"`
as small notifications (id, type, created, related_object) signed like webhooks, which
`StripeClient.parse_event_notification` verifies; `GET /v2/core/events/{id}` returns the full
event with its `data`, which `notification.fetch_event()` reads. Destinations with
`event_payload: "snapshot"` receive the v1 events that webhook endpoints receive.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from emulators.stripe.core import API_VERSION, Core, iso
from emulators.stripe.routes import Request, route
from emulators.stripe.wire import StripeError, i, invalid, missing

KIND = "v2.core.event_destination"
EVENT = "v2.core.event"
_CREATE_FIELDS = {
    "name",
    "type",
    "enabled_events",
    "event_payload",
    "webhook_endpoint",
    "description",
    "metadata",
    "events_from",
    "include",
    "snapshot_api_version",
    "amazon_eventbridge",
    "azure_event_grid",
}
_INCLUDE = ("webhook_endpoint.signing_secret", "webhook_endpoint.url")


def _unknown(body: dict[str, Any], allowed: set[str], prefix: str = "") -> None:
    for key in body:
        if key not in allowed:
            raise StripeError(
                f"Received unknown parameter: {prefix}{key}", code="parameter_unknown", param=f"{prefix}{key}"
            )


def _strings(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(param, f"{param} must be an array of strings.")
    return list(value)


def add_destination(
    core: Core,
    name: str,
    url: str,
    enabled_events: list[str],
    event_payload: str = "thin",
    *,
    description: str = "",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Store an enabled webhook event destination; its signing secret is in `_secret`."""
    now = iso(core.wall())
    secret = f"whsec_{secrets.token_hex(24)}"
    destination = {
        "id": core.store.new_id("ed_test"),
        "object": KIND,
        "amazon_eventbridge": None,
        "azure_event_grid": None,
        "created": now,
        "description": description,
        "enabled_events": enabled_events,
        "event_payload": event_payload,
        "events_from": ["@self"],
        "livemode": False,
        "metadata": metadata or {},
        "name": name,
        "snapshot_api_version": API_VERSION if event_payload == "snapshot" else None,
        "status": "enabled",
        "status_details": None,
        "type": "webhook_endpoint",
        "updated": now,
        # The SDK: url and signing_secret are "Returned only when explicitly included" (see _shown).
        "webhook_endpoint": {"signing_secret": None, "url": url},
        "_secret": secret,
    }
    return core.store.put(KIND, destination)


def _shown(destination: dict[str, Any], include: list[str]) -> dict[str, Any]:
    """The destination as the API shows it: redacted webhook fields unless `include`d."""
    shown = dict(destination)
    url = destination["webhook_endpoint"]["url"]
    shown["webhook_endpoint"] = {
        "signing_secret": destination["_secret"] if "webhook_endpoint.signing_secret" in include else None,
        "url": url if "webhook_endpoint.url" in include else None,
    }
    return shown


def _include(value: Any, allowed: tuple[str, ...]) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    for n, item in enumerate(values):
        if item not in allowed:
            raise invalid(f"include[{n}]", f"Invalid include[{n}]: must be one of {', '.join(allowed)}")
    return [str(v) for v in values]


@route("POST", "/v2/core/event_destinations")
def create_destination(req: Request) -> dict[str, Any]:
    body = req.body_json if isinstance(req.body_json, dict) else {}
    _unknown(body, _CREATE_FIELDS)
    for key in ("name", "type", "enabled_events", "event_payload"):
        if key not in body:
            raise missing(key)
    if body["type"] != "webhook_endpoint":
        raise invalid(
            "type",
            f"Event destinations of type {body['type']!r} are not supported by this emulator; use webhook_endpoint.",
        )
    if body["event_payload"] not in ("thin", "snapshot"):
        raise invalid("event_payload", "Invalid event_payload: must be one of snapshot, thin")
    if body["event_payload"] == "thin" and body.get("snapshot_api_version") is not None:
        # "For snapshot events only ...; do not provide this for thin events."
        raise invalid("snapshot_api_version", "snapshot_api_version can only be set for snapshot event destinations.")
    if body.get("snapshot_api_version") not in (None, API_VERSION):
        raise invalid("snapshot_api_version", f"The emulator renders events in API version {API_VERSION} only.")
    enabled = _strings(body["enabled_events"], "enabled_events")
    if not enabled:
        raise invalid("enabled_events", "enabled_events must name at least one event type.")
    endpoint = body.get("webhook_endpoint")
    if not isinstance(endpoint, dict) or "url" not in endpoint:
        raise missing("webhook_endpoint.url")
    _unknown(endpoint, {"url"}, "webhook_endpoint.")
    url = endpoint["url"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid("webhook_endpoint.url", "Invalid URL: must start with http:// or https://")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid("metadata", "metadata must be an object of string values.")
    include = _include(body.get("include"), _INCLUDE)
    destination = add_destination(
        req.core,
        str(body["name"]),
        url,
        enabled,
        str(body["event_payload"]),
        description=str(body.get("description") or ""),
        metadata=metadata,
    )
    if "events_from" in body:
        destination["events_from"] = _strings(body["events_from"], "events_from")
    return _shown(destination, include)


@route("GET", "/v2/core/event_destinations")
def list_destinations(req: Request) -> dict[str, Any]:
    _unknown(req.params, {"include", "limit", "page"})
    include = _include(req.params.get("include"), ("webhook_endpoint.url",))
    limit = i("limit", req.params.get("limit", "20"))
    found = [_shown(d, include) for d in req.core.store.all(KIND)][:limit]
    return {"data": found, "next_page_url": None, "previous_page_url": None}


@route("GET", "/v2/core/event_destinations/{id}")
def get_destination(req: Request) -> dict[str, Any]:
    _unknown(req.params, {"include"})
    include = _include(req.params.get("include"), ("webhook_endpoint.url",))
    return _shown(req.core.store.get(KIND, req.args[0], "event destination"), include)


def _set_status(req: Request, status: str) -> dict[str, Any]:
    destination = req.core.store.get(KIND, req.args[0], "event destination")
    destination.update(status=status, updated=iso(req.core.wall()))
    destination["status_details"] = {"disabled": {"reason": "user"}} if status == "disabled" else None
    return _shown(destination, [])


@route("POST", "/v2/core/event_destinations/{id}/disable")
def disable_destination(req: Request) -> dict[str, Any]:
    return _set_status(req, "disabled")


@route("POST", "/v2/core/event_destinations/{id}/enable")
def enable_destination(req: Request) -> dict[str, Any]:
    return _set_status(req, "enabled")


# ---- thin events ---------------------------------------------------------------------------------
@route("GET", "/v2/core/events/{id}")
def get_event(req: Request) -> dict[str, Any]:
    _unknown(req.params, set())
    return req.core.store.get(EVENT, req.args[0], "event")


def _time(value: Any, param: str) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid(param, f"{param} must be an RFC 3339 date-time.") from None


@route("GET", "/v2/core/events")
def list_events(req: Request) -> dict[str, Any]:
    """Newest first; `types`, `object_id` (the related object) and `created` ranges filter."""
    _unknown(req.params, {"limit", "types", "object_id", "created", "page"})
    types = req.params.get("types")
    types = [types] if isinstance(types, str) else types
    created = req.params.get("created") or {}
    bounds = {op: _time(v, f"created[{op}]") for op, v in created.items()} if isinstance(created, dict) else {}

    def keep(event: dict[str, Any]) -> bool:
        if types and event["type"] not in types:
            return False
        if req.params.get("object_id") and (event.get("related_object") or {}).get("id") != req.params["object_id"]:
            return False
        at = _time(event["created"], "created")
        return not (
            ("gt" in bounds and at <= bounds["gt"])
            or ("gte" in bounds and at < bounds["gte"])
            or ("lt" in bounds and at >= bounds["lt"])
            or ("lte" in bounds and at > bounds["lte"])
        )

    found = [e for e in req.core.store.all(EVENT) if keep(e)][::-1]
    limit = i("limit", req.params.get("limit", "20"))
    return {"data": found[:limit], "next_page_url": None, "previous_page_url": None}
