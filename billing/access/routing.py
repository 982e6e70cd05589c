"""From a verified Stripe event to the work it calls for (pure).

The plan names objects only by id: handlers re-read them from Stripe, so a plan can be queued,
retried or run twice with the same result. Plans serialise to JSON for the event work queue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billing.access.stripe_objects import invoice_subscription_id


class MalformedEvent(ValueError):
    """The body is signed JSON but not a Stripe event."""


@dataclass(frozen=True)
class SyncSubscription:
    """Re-read the Stripe subscription and make APIM and the link match it."""

    subscription_id: str


@dataclass(frozen=True)
class ReportClosingUsage:
    """Report the finished period's usage before Stripe finalises the invoice (usage area).

    The invoice's id, creation time and `automatically_finalizes_at` (Stripe's time) say how long
    its draft window is (`billing.access.draft_window`); None where the invoice does not say.
    """

    subscription_id: str
    period_start: int
    period_end: int
    invoice_id: str = ""
    invoice_created: int | None = None
    finalizes_at: int | None = None


@dataclass(frozen=True)
class RemindTrialEnd:
    """Mail the consumer that the subscription's free trial ends soon (billing.access.trials)."""

    subscription_id: str


Action = SyncSubscription | ReportClosingUsage | RemindTrialEnd


@dataclass(frozen=True)
class EventPlan:
    event_id: str
    event_type: str
    created: int
    actions: tuple[Action, ...]
    note: str = ""  # why there is nothing to do, for the log

    def to_json(self) -> bytes:
        actions = [
            {"kind": "sync", "subscription_id": a.subscription_id}
            if isinstance(a, SyncSubscription)
            else {"kind": "trial_reminder", "subscription_id": a.subscription_id}
            if isinstance(a, RemindTrialEnd)
            else {
                "kind": "closing",
                "subscription_id": a.subscription_id,
                "period_start": a.period_start,
                "period_end": a.period_end,
                "invoice_id": a.invoice_id,
                "invoice_created": a.invoice_created,
                "finalizes_at": a.finalizes_at,
            }
            for a in self.actions
        ]
        payload = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "created": self.created,
            "actions": actions,
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> EventPlan:
        try:
            data = json.loads(raw)
            actions: list[Action] = []
            for a in data["actions"]:
                if a["kind"] == "sync":
                    actions.append(SyncSubscription(str(a["subscription_id"])))
                elif a["kind"] == "trial_reminder":
                    actions.append(RemindTrialEnd(str(a["subscription_id"])))
                elif a["kind"] == "closing":
                    actions.append(
                        ReportClosingUsage(
                            str(a["subscription_id"]),
                            int(a["period_start"]),
                            int(a["period_end"]),
                            str(a.get("invoice_id") or ""),
                            _optional_int(a.get("invoice_created")),
                            _optional_int(a.get("finalizes_at")),
                        )
                    )
                else:
                    raise MalformedEvent(f"unknown action kind {a['kind']!r}")
            return cls(str(data["event_id"]), str(data["event_type"]), int(data["created"]), tuple(actions))
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedEvent(f"not an event work message: {exc}") from None


SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
    }
)
# Invoice events that can change whether the consumer has paid; `invoice.payment_succeeded`
# always accompanies `invoice.paid`, so handling both would only repeat the same work.
INVOICE_STATE_EVENTS = frozenset(
    {"invoice.paid", "invoice.payment_failed", "invoice.marked_uncollectible", "invoice.voided"}
)
# "Occurs three days before a subscription's trial period is scheduled to end" (Stripe's event types).
TRIAL_WILL_END = "customer.subscription.trial_will_end"
# Invoices that close a stretch of usage: the period's end (and Stripe's final invoice at cancellation).
CLOSING_REASONS = frozenset({"subscription_cycle", "subscription_update"})


# Every event type the webhook acts on: the endpoint in Stripe must be subscribed to exactly these
# (docs/deploy.md lists them; a test keeps the two equal).
HANDLED_EVENTS = frozenset(
    {"checkout.session.completed", "invoice.created", TRIAL_WILL_END} | SUBSCRIPTION_EVENTS | INVOICE_STATE_EVENTS
)


def parse_event(raw: Mapping[str, Any]) -> tuple[str, str, int, Mapping[str, Any]]:
    """Id, type, created and data.object of an event, or MalformedEvent naming what is missing."""
    event_id, event_type = raw.get("id"), raw.get("type")
    if raw.get("object") != "event" or not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise MalformedEvent('expected a Stripe event: {"object": "event", "id": "evt_...", ...}')
    if not isinstance(event_type, str) or not event_type:
        raise MalformedEvent("the event has no type")
    created = raw.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise MalformedEvent("the event has no 'created' time")
    data = raw.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise MalformedEvent("the event has no data.object")
    return event_id, event_type, created, obj


def plan_event(raw: Mapping[str, Any]) -> EventPlan:
    event_id, event_type, created, obj = parse_event(raw)

    def plan(*actions: Action, note: str = "") -> EventPlan:
        return EventPlan(event_id, event_type, created, tuple(actions), note)

    if event_type == "checkout.session.completed":
        if obj.get("mode") != "subscription":
            return plan(note=f"checkout session in {obj.get('mode')!r} mode, not a subscription")
        sub_id = _ref(obj.get("subscription"))
        return plan(SyncSubscription(sub_id)) if sub_id else plan(note="checkout session without a subscription")
    if event_type in SUBSCRIPTION_EVENTS:
        sub_id = _ref(obj.get("id"))
        return plan(SyncSubscription(sub_id)) if sub_id else plan(note="subscription event without an id")
    if event_type == TRIAL_WILL_END:
        sub_id = _ref(obj.get("id"))
        return plan(RemindTrialEnd(sub_id)) if sub_id else plan(note="subscription event without an id")
    if event_type in INVOICE_STATE_EVENTS:
        sub_id = invoice_subscription_id(obj)
        return plan(SyncSubscription(sub_id)) if sub_id else plan(note="invoice without a subscription")
    if event_type == "invoice.created":
        sub_id = invoice_subscription_id(obj)
        reason = obj.get("billing_reason")
        start, end = obj.get("period_start"), obj.get("period_end")
        if not sub_id or reason not in CLOSING_REASONS:
            return plan(note=f"invoice.created ({reason}) closes no usage period")
        if not isinstance(start, int) or not isinstance(end, int) or end <= start:
            return plan(note=f"invoice.created ({reason}) with an empty period")
        return plan(
            ReportClosingUsage(
                sub_id,
                start,
                end,
                _ref(obj.get("id")),
                _optional_int(obj.get("created")),
                _optional_int(obj.get("automatically_finalizes_at")),
            )
        )
    return plan(note=f"event type {event_type} is not handled")


def _optional_int(value: Any) -> int | None:
    """A unix time, or None for null (and for anything that is not a whole number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ref(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) else ""
