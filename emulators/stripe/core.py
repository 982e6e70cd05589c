"""The emulator's state and the services every resource uses: time, events, webhooks, lists."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emulators.stripe.clock import REAL, Scheduler
from emulators.stripe.faults import Faults, FaultSettings
from emulators.stripe.store import Store, blank, public
from emulators.stripe.webhooks import Deliverer
from emulators.stripe.wire import StripeError, invalid

API_VERSION = "2026-10-28.endive"

# Objects the search endpoints find (docs.stripe.com/search lists these resources, plus charges and
# PaymentIntents, which the emulator does not have).
SEARCHABLE = ("customer", "subscription", "invoice", "price", "product")


@dataclass
class Config:
    api_key: str = "sk_test_emulator"
    # Smart-Retries-like schedule: days after the first failed attempt for each retry.
    retry_days: tuple[int, ...] = (3, 5, 7)
    # What the subscription becomes after the last retry fails: "unpaid" or "canceled".
    after_retries: str = "unpaid"
    finalize_after: int = 3600  # seconds from invoice.created to automatic finalisation
    # The customer portal settings saved in the Dashboard (create-parameter shape, e.g.
    # {"features": {...}}): they become the default configuration. None = never saved, as in a
    # new Stripe account, where portal sessions without `configuration` fail.
    portal_settings: dict[str, Any] | None = None
    webhook_retry_base: float = 0.2
    webhook_max_attempts: int = 6
    meter_session_ttl: int = 900
    # docs.stripe.com/search: "Under normal operating conditions, data is searchable in under 1 minute."
    search_lag_seconds: float = 60.0
    # Invalid meter events of the v2 stream are reported per meter for each window of this many
    # seconds, at the window's end (guess: the API reference's example event spans 10 seconds).
    meter_error_window_seconds: float = 10.0
    # docs.stripe.com/api/idempotent_requests: keys can be removed "after they're at least 24 hours old".
    idempotency_ttl: int = 24 * 3600
    extra: dict[str, Any] = field(default_factory=dict)


def iso(ts: float) -> str:
    """v2 timestamps: RFC 3339 with milliseconds, UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


class Core:
    def __init__(self, config: Config, faults: FaultSettings) -> None:
        self.config = config
        self.store = Store()
        self.store.on_put = self.touch
        self.faults = Faults(faults)
        self.wall_offset = 0.0  # seconds added to the real time: see advance_wall_clock
        self._wall_lock = threading.Lock()
        self.scheduler = Scheduler(self.store.lock, self._set_frozen, self.wall)
        self.deliverer = Deliverer(self.faults, config.webhook_retry_base, config.webhook_max_attempts)
        self.base_url = ""
        # Idempotency-Key -> (request fingerprint, status, body, stored at: wall clock)
        self.idempotency: dict[str, tuple[str, int, bytes, float]] = {}
        self.meter_sessions: dict[str, int] = {}  # token -> expires_at (unix)
        # What search sees: object id -> [(written at, snapshot)], oldest first (see search.py).
        self.search_versions: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.meter_event_seq = 0  # meter events reported so far (see next_meter_event_seq)
        self.meter_errors: dict[str, Any] = {}  # meter id ("" = no meter) -> meter_errors.Window awaiting its report

    # ---- time ------------------------------------------------------------------------------
    def _set_frozen(self, clock_id: str, when: int) -> None:
        clock = self.store.maybe("test_helpers.test_clock", clock_id)
        if clock is not None:
            clock["frozen_time"] = when

    def wall(self) -> float:
        """The emulator's own clock: real time, plus what tests moved it forward."""
        with self._wall_lock:
            return time.time() + self.wall_offset

    def advance_wall_clock(self, seconds: float) -> None:
        """Move the emulator's own clock forward (not test clocks) and run what came due.

        Lets tests cross wall-clock windows without sleeping: search lag, idempotency key expiry,
        meter error report windows, meter event session expiry, drafts of customers without a
        test clock. Webhook signatures keep the real time, as the SDK checks them against it.
        """
        if seconds < 0:
            raise ValueError("the emulator's clock only moves forward")
        with self._wall_lock:
            self.wall_offset += seconds
        with self.store.lock:
            self.scheduler.run_until(REAL, int(self.wall()))

    def now(self, clock_id: str = REAL) -> int:
        if clock_id and clock_id != REAL:
            clock = self.store.maybe("test_helpers.test_clock", clock_id)
            if clock is not None:
                return int(clock["frozen_time"])
        return int(self.wall())

    def next_meter_event_seq(self) -> int:
        """Number the next reported meter event: what "reported before/after a price change" compares."""
        self.meter_event_seq += 1
        return self.meter_event_seq

    # ---- search index ----------------------------------------------------------------------
    def touch(self, obj: dict[str, Any]) -> None:
        """Record a write of a searchable object; search sees it `search_lag_seconds` later."""
        if obj.get("object") not in SEARCHABLE or "id" not in obj:
            return
        now = self.wall()
        versions = self.search_versions.setdefault(obj["id"], [])
        versions.append((now, public(obj)))
        # Keep one version old enough to be searchable and every newer one.
        settled = now - self.config.search_lag_seconds
        while len(versions) > 1 and versions[1][0] <= settled:
            versions.pop(0)

    def indexed(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The version of an object search sees now (None: not searchable yet)."""
        versions = self.search_versions.get(obj["id"])
        if not versions:
            return obj  # never recorded (e.g. made before the index existed): treat as settled
        settled = self.wall() - self.config.search_lag_seconds
        seen = None
        for written, snapshot in versions:
            if written <= settled:
                seen = snapshot
        return seen

    def clock_of(self, customer_id: str | None) -> str:
        if not customer_id:
            return REAL
        customer = self.store.maybe("customer", customer_id)
        return (customer or {}).get("test_clock") or REAL

    def schedule(self, clock_id: str, when: int, name: str, run: Callable[[], None]) -> None:
        self.scheduler.at(clock_id, when, name, run)

    # ---- events ----------------------------------------------------------------------------
    def emit(
        self,
        event_type: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
        clock_id: str = REAL,
    ) -> dict[str, Any]:
        event = blank("event")
        event.update(
            id=self.store.new_id("evt"),
            api_version=API_VERSION,
            created=self.now(clock_id),
            data={"object": public(obj)},
            type=event_type,
            request={"id": None, "idempotency_key": None},
            pending_webhooks=0,
        )
        if previous:
            event["data"]["previous_attributes"] = public(previous)
        self.touch(obj)
        endpoints = [
            e
            for e in self.store.all("webhook_endpoint")
            if e["status"] == "enabled" and ("*" in e["enabled_events"] or event_type in e["enabled_events"])
        ]
        # Event destinations with snapshot payloads receive the same v1 events as webhook endpoints.
        endpoints += self.destinations(event_type, "snapshot")
        event["pending_webhooks"] = len(endpoints)
        self.store.put("event", event)
        for endpoint in endpoints:
            payload = json.dumps(public(event), indent=2).encode()
            self.deliverer.enqueue(endpoint["id"], endpoint["url"], endpoint["_secret"], event["id"], payload)
        return event

    def destinations(self, event_type: str, payload: str) -> list[dict[str, Any]]:
        """Enabled webhook event destinations of that payload kind that want the event type."""
        return [
            {"id": d["id"], "url": d["webhook_endpoint"]["url"], "_secret": d["_secret"]}
            for d in self.store.all("v2.core.event_destination")
            if d["status"] == "enabled"
            and d["event_payload"] == payload
            and ("*" in d["enabled_events"] or event_type in d["enabled_events"])
        ]

    def emit_thin(self, event_type: str, data: dict[str, Any], related: dict[str, Any] | None) -> dict[str, Any]:
        """A v2 thin event: stored in full for GET /v2/core/events/{id}, delivered as a notification.

        Only event destinations with `event_payload: thin` receive it, never v1 webhook endpoints.
        """
        event_id = self.store.new_id("evt_test")
        notification: dict[str, Any] = {
            "id": event_id,
            "object": "v2.core.event",
            "type": event_type,
            "created": iso(self.wall()),
            "livemode": False,
            "context": None,
            "reason": None,
        }
        if related is not None:
            notification["related_object"] = related
        event = {**notification, "data": data, "changes": None, "snapshot_event": None}
        self.store.put("v2.core.event", event)
        payload = json.dumps(notification, indent=2).encode()
        for destination in self.destinations(event_type, "thin"):
            self.deliverer.enqueue(destination["id"], destination["url"], destination["_secret"], event_id, payload)
        return event

    # ---- lists -----------------------------------------------------------------------------
    def page(
        self,
        objects: Iterable[dict[str, Any]],
        params: dict[str, Any],
        url: str,
        newest_first: bool = True,
    ) -> dict[str, Any]:
        """Stripe list pagination: newest first, `limit` 1..100, `starting_after`/`ending_before`."""
        items = list(objects)
        if newest_first:
            items.reverse()
        limit = params.get("limit", 10)
        if not 1 <= limit <= 100:
            raise invalid("limit", "Invalid limit: must be between 1 and 100")
        ids = [o["id"] for o in items]
        if params.get("starting_after"):
            cursor = params["starting_after"]
            if cursor not in ids:
                raise invalid("starting_after", f"No such object: '{cursor}'")
            items = items[ids.index(cursor) + 1 :]
            window = items[:limit]
        elif params.get("ending_before"):
            cursor = params["ending_before"]
            if cursor not in ids:
                raise invalid("ending_before", f"No such object: '{cursor}'")
            items = items[: ids.index(cursor)]
            window = items[-limit:]
        else:
            window = items[:limit]
        return {"object": "list", "data": window, "has_more": len(items) > len(window), "url": url}


def require_state(condition: bool, message: str, code: str | None = None) -> None:
    if not condition:
        raise StripeError(message, code=code)
