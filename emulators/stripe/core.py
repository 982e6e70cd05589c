"""The emulator's state and the services every resource uses: time, events, webhooks, lists."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from emulators.stripe.clock import REAL, Scheduler
from emulators.stripe.faults import Faults, FaultSettings
from emulators.stripe.store import Store, blank, public
from emulators.stripe.webhooks import Deliverer
from emulators.stripe.wire import StripeError, invalid

API_VERSION = "2026-10-28.endive"


@dataclass
class Config:
    api_key: str = "sk_test_emulator"
    # Smart-Retries-like schedule: days after the first failed attempt for each retry.
    retry_days: tuple[int, ...] = (3, 5, 7)
    # What the subscription becomes after the last retry fails: "unpaid" or "canceled".
    after_retries: str = "unpaid"
    finalize_after: int = 3600  # seconds from invoice.created to automatic finalisation
    portal_cancel: str = "at_period_end"  # or "immediately"
    webhook_retry_base: float = 0.2
    webhook_max_attempts: int = 6
    meter_session_ttl: int = 900
    extra: dict[str, Any] = field(default_factory=dict)


class Core:
    def __init__(self, config: Config, faults: FaultSettings) -> None:
        self.config = config
        self.store = Store()
        self.faults = Faults(faults)
        self.scheduler = Scheduler(self.store.lock, self._set_frozen)
        self.deliverer = Deliverer(self.faults, config.webhook_retry_base, config.webhook_max_attempts)
        self.base_url = ""
        self.idempotency: dict[str, tuple[str, int, bytes]] = {}
        self.meter_sessions: dict[str, int] = {}  # token -> expires_at (unix)

    # ---- time ------------------------------------------------------------------------------
    def _set_frozen(self, clock_id: str, when: int) -> None:
        clock = self.store.maybe("test_helpers.test_clock", clock_id)
        if clock is not None:
            clock["frozen_time"] = when

    def now(self, clock_id: str = REAL) -> int:
        if clock_id and clock_id != REAL:
            clock = self.store.maybe("test_helpers.test_clock", clock_id)
            if clock is not None:
                return int(clock["frozen_time"])
        return int(time.time())

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
        endpoints = [
            e
            for e in self.store.all("webhook_endpoint")
            if e["status"] == "enabled" and ("*" in e["enabled_events"] or event_type in e["enabled_events"])
        ]
        event["pending_webhooks"] = len(endpoints)
        self.store.put("event", event)
        for endpoint in endpoints:
            payload = json.dumps(public(event), indent=2).encode()
            self.deliverer.enqueue(endpoint["id"], endpoint["url"], endpoint["_secret"], event["id"], payload)
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
