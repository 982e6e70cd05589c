"""Test clocks, events, and webhook endpoints."""

from __future__ import annotations

import secrets
from typing import Any

from emulators.stripe import thresholds
from emulators.stripe.core import API_VERSION
from emulators.stripe.resources.catalog import merge_metadata
from emulators.stripe.routes import Request, route
from emulators.stripe.store import blank
from emulators.stripe.wire import EXPAND, LIST, arr, enum, i, invalid, metadata, nullable, obj, s, validate


# ---- test clocks -------------------------------------------------------------------------------
@route("POST", "/v1/test_helpers/test_clocks")
def create_clock(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"frozen_time": i, "name": s, **EXPAND}, ("frozen_time",))
    clock = blank("test_helpers.test_clock")
    now = req.core.now()
    clock.update(
        id=req.core.store.new_id("clock"),
        created=now,
        deletes_after=now + 30 * 86400,
        frozen_time=p["frozen_time"],
        name=p.get("name"),
        status="ready",
        status_details={},
    )
    return req.core.store.put("test_helpers.test_clock", clock)


@route("GET", "/v1/test_helpers/test_clocks/{id}")
def get_clock(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("test_helpers.test_clock", req.args[0], "test clock")


@route("GET", "/v1/test_helpers/test_clocks")
def list_clocks(req: Request) -> dict[str, Any]:
    p = validate(req.params, LIST)
    return req.core.page(req.core.store.all("test_helpers.test_clock"), p, "/v1/test_helpers/test_clocks")


@route("DELETE", "/v1/test_helpers/test_clocks/{id}")
def delete_clock(req: Request) -> dict[str, Any]:
    clock = req.core.store.get("test_helpers.test_clock", req.args[0], "test clock")
    for kind in ("customer", "subscription", "invoice"):
        for obj_ in req.core.store.all(kind):
            if obj_.get("test_clock") == clock["id"]:
                obj_["_deleted"] = True
    clock["_deleted"] = True
    return {"id": clock["id"], "object": "test_helpers.test_clock", "deleted": True}


@route("POST", "/v1/test_helpers/test_clocks/{id}/advance")
def advance_clock(req: Request) -> dict[str, Any]:
    """Runs every renewal, finalisation and payment attempt due by `frozen_time`, in time order.

    Stripe advances asynchronously (status `advancing`, then `ready`); the emulator finishes
    within this request, so the returned clock is already `ready` and pollers stop at once.
    """
    p = validate(req.params, {"frozen_time": i, **EXPAND}, ("frozen_time",))
    core = req.core
    clock = core.store.get("test_helpers.test_clock", req.args[0], "test clock")
    if p["frozen_time"] <= clock["frozen_time"]:
        raise invalid(
            "frozen_time", f"The test clock can only move forward: frozen_time must be after {clock['frozen_time']}."
        )
    clock["status"] = "advancing"
    core.emit("test_helpers.test_clock.advancing", clock, None, clock["id"])
    core.scheduler.run_until(clock["id"], p["frozen_time"])
    thresholds.evaluate_clock(core, clock["id"])  # e.g. usage stamped a few minutes ahead has come due
    clock["status"] = "ready"
    core.emit("test_helpers.test_clock.ready", clock, {"status": "advancing"}, clock["id"])
    return clock


# ---- events ------------------------------------------------------------------------------------
@route("GET", "/v1/events/{id}")
def get_event(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("event", req.args[0])


@route("GET", "/v1/events")
def list_events(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            **LIST,
            "type": s,
            "types": arr(s),
            "created": obj({"gt": i, "gte": i, "lt": i, "lte": i}),
            "delivery_success": s,
        },
    )
    created = p.get("created", {})

    def keep(e: dict[str, Any]) -> bool:
        if "type" in p:
            pattern = p["type"]
            if pattern.endswith("*") and not e["type"].startswith(pattern[:-1]):
                return False
            if not pattern.endswith("*") and e["type"] != pattern:
                return False
        if "types" in p and e["type"] not in p["types"]:
            return False
        c = e["created"]
        return not (
            ("gt" in created and c <= created["gt"])
            or ("gte" in created and c < created["gte"])
            or ("lt" in created and c >= created["lt"])
            or ("lte" in created and c > created["lte"])
        )

    return req.core.page([e for e in req.core.store.all("event") if keep(e)], p, "/v1/events")


# ---- webhook endpoints ---------------------------------------------------------------------------
def add_endpoint(
    core: Any,
    url: str,
    enabled_events: list[str],
    secret: str | None = None,
    *,
    description: str | None = None,
    meta: dict[str, str] | None = None,
    api_version: str | None = None,
) -> dict[str, Any]:
    endpoint = blank("webhook_endpoint")
    secret = secret or f"whsec_{secrets.token_hex(24)}"
    endpoint.update(
        id=core.store.new_id("we"),
        api_version=api_version,
        application=None,
        created=core.now(),
        description=description,
        enabled_events=enabled_events,
        metadata=meta or {},
        status="enabled",
        url=url,
        secret=secret,
        _secret=secret,
    )
    return core.store.put("webhook_endpoint", endpoint)


@route("POST", "/v1/webhook_endpoints")
def create_endpoint(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "url": s,
            "enabled_events": arr(s),
            "description": s,
            "metadata": metadata,
            "api_version": s,
            "connect": s,
            **EXPAND,
        },
        ("url", "enabled_events"),
    )
    if not p["url"].startswith(("http://", "https://")):
        raise invalid("url", "Invalid URL: must start with http:// or https://")
    if "connect" in p:
        raise invalid("connect", "Connect endpoints are not supported by the emulator.")
    if p.get("api_version") not in (None, API_VERSION):
        raise invalid("api_version", f"The emulator speaks API version {API_VERSION} only.")
    endpoint = add_endpoint(
        req.core,
        p["url"],
        p["enabled_events"],
        description=p.get("description"),
        meta=p.get("metadata"),
        api_version=p.get("api_version"),
    )
    return endpoint  # the secret is shown only on creation, as Stripe does


def _hide_secret(endpoint: dict[str, Any]) -> dict[str, Any]:
    shown = dict(endpoint)
    shown.pop("secret", None)
    return shown


@route("GET", "/v1/webhook_endpoints/{id}")
def get_endpoint(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return _hide_secret(req.core.store.get("webhook_endpoint", req.args[0], "webhook endpoint"))


@route("POST", "/v1/webhook_endpoints/{id}")
def update_endpoint(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "url": s,
            "enabled_events": arr(s),
            "description": nullable(s),
            "metadata": metadata,
            "disabled": enum("true", "false"),
            **EXPAND,
        },
    )
    endpoint = req.core.store.get("webhook_endpoint", req.args[0], "webhook endpoint")
    for key in ("url", "enabled_events", "description"):
        if key in p:
            endpoint[key] = p[key]
    if "disabled" in p:
        endpoint["status"] = "disabled" if p["disabled"] == "true" else "enabled"
    if "metadata" in p:
        endpoint["metadata"] = merge_metadata(endpoint["metadata"], p["metadata"])
    return _hide_secret(endpoint)


@route("DELETE", "/v1/webhook_endpoints/{id}")
def delete_endpoint(req: Request) -> dict[str, Any]:
    endpoint = req.core.store.get("webhook_endpoint", req.args[0], "webhook endpoint")
    endpoint["_deleted"] = True
    return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}


@route("GET", "/v1/webhook_endpoints")
def list_endpoints(req: Request) -> dict[str, Any]:
    p = validate(req.params, LIST)
    page = req.core.page(req.core.store.all("webhook_endpoint"), p, "/v1/webhook_endpoints")
    page["data"] = [_hide_secret(e) for e in page["data"]]
    return page
