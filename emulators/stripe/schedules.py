"""Subscription schedules: `from_subscription`, phases, release, cancel, and the phase change at a period end.

What the emulator implements (sources and guesses in README.md, "Subscription schedules"):
- `POST /v1/subscription_schedules` with `from_subscription` only: one phase with the subscription's
  items from its current period start to its current period end, `end_behavior=release`.
- `POST /v1/subscription_schedules/{id}`: `phases` (the current one first, then later ones), each
  with `items` (`price`, `quantity`, `metadata`), `start_date`, `end_date` or `duration`, `metadata`,
  `proration_behavior`; `end_behavior` (`release`, `cancel`); `metadata`. Phases must follow each
  other without gaps; a phase may change only at a period end of the subscription (an emulator
  limitation), and the current phase's items cannot be changed (use the subscription API).
- `POST .../release` and `POST .../cancel`; `GET` one and the list.
- At a phase's end (the subscription's period end, run by `billing.renew`), the next phase's items
  replace the subscription's (kept where the price is the same), its metadata is merged into the
  subscription's, then the period renews with those items; after the last phase the schedule is
  released (or the subscription cancelled, with `end_behavior=cancel`).
"""

from __future__ import annotations

import copy
from typing import Any

from emulators.stripe import billing
from emulators.stripe.core import Core
from emulators.stripe.resources.catalog import merge_metadata
from emulators.stripe.resources.subscriptions import check_price
from emulators.stripe.routes import Request, route
from emulators.stripe.store import blank
from emulators.stripe.wire import (
    EXPAND,
    LIST,
    StripeError,
    arr,
    b,
    enum,
    i,
    int_or,
    invalid,
    metadata,
    obj,
    s,
    validate,
)

KIND = "subscription_schedule"
PRORATION = enum("create_prorations", "none", "always_invoice")
PHASE_ITEM = obj({"price": s, "quantity": i, "metadata": metadata})
PHASE = obj(
    {
        "items": arr(PHASE_ITEM),
        "start_date": int_or("now"),
        "end_date": int_or("now"),
        "duration": obj({"interval": enum("day", "week", "month", "year"), "interval_count": i}, ("interval",)),
        "metadata": metadata,
        "proration_behavior": PRORATION,
    },
    ("items",),
)


def _phase_items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "price": item["price"]["id"],
            "quantity": item["quantity"],
            "metadata": dict(item["metadata"]),
            "discounts": [],
            "tax_rates": [],
            "plan": item["price"]["id"],
            "billing_thresholds": None,
        }
        for item in billing.items(sub)
    ]


def _phase(
    sub: dict[str, Any], items: list[dict[str, Any]], start: int, end: int, *, meta: dict[str, str], proration: str
) -> dict[str, Any]:
    return {
        "add_invoice_items": [],
        "application_fee_percent": None,
        "automatic_tax": None,
        "billing_cycle_anchor": None,
        "billing_thresholds": None,
        "collection_method": None,
        "currency": sub["currency"],
        "default_payment_method": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "end_date": end,
        "invoice_settings": None,
        "items": items,
        "metadata": meta,
        "on_behalf_of": None,
        "proration_behavior": proration,
        "start_date": start,
        "transfer_data": None,
        "trial_end": None,
    }


@route("POST", "/v1/subscription_schedules")
def create_schedule(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "from_subscription": s,
            "customer": s,
            "phases": arr(PHASE),
            "end_behavior": s,
            "metadata": metadata,
            "start_date": int_or("now"),
            **EXPAND,
        },
    )
    if "from_subscription" not in p:
        raise invalid(
            "from_subscription",
            "The emulator creates subscription schedules only from an existing subscription (from_subscription).",
        )
    others = sorted(set(p) - {"from_subscription", "metadata", "expand"})
    if others:
        # SubscriptionScheduleCreateParams.from_subscription: "When using this parameter, other
        # parameters (such as phase values) cannot be set."
        raise invalid(
            others[0],
            "You cannot set other parameters (such as phases) together with from_subscription; "
            "create the schedule first, then update it.",
        )
    core = req.core
    sub = core.store.get("subscription", p["from_subscription"], param="from_subscription")
    if sub["status"] in ("canceled", "incomplete_expired", "incomplete"):
        raise invalid(
            "from_subscription",
            f"The subscription {sub['id']} is {sub['status']}; only a live, paid "
            "subscription can be managed by a schedule.",
        )
    if sub.get("schedule"):
        raise invalid(
            "from_subscription",
            f"The subscription {sub['id']} is already managed by the subscription schedule {sub['schedule']}.",
        )
    clock = core.clock_of(sub["customer"])
    now = core.now(clock)
    first = billing.items(sub)[0]
    start, end = first["current_period_start"], first["current_period_end"]
    schedule = blank(KIND)
    schedule.update(
        id=core.store.new_id("sub_sched"),
        created=now,
        customer=sub["customer"],
        subscription=sub["id"],
        status="active",
        end_behavior="release",
        metadata=p.get("metadata", {}),
        test_clock=sub["test_clock"],
        canceled_at=None,
        completed_at=None,
        released_at=None,
        released_subscription=None,
        application=None,
        customer_account=None,
        billing_mode=copy.deepcopy(sub["billing_mode"]),
        current_phase={"start_date": start, "end_date": end},
        default_settings={
            "application_fee_percent": None,
            "automatic_tax": None,
            "billing_cycle_anchor": "automatic",
            "billing_thresholds": None,
            "collection_method": "charge_automatically",
            "default_payment_method": None,
            "description": None,
            "invoice_settings": None,
            "on_behalf_of": None,
            "transfer_data": None,
        },
        phases=[_phase(sub, _phase_items(sub), start, end, meta={}, proration="create_prorations")],
    )
    core.store.put(KIND, schedule)
    previous = {"schedule": None}
    sub["schedule"] = schedule["id"]
    core.emit("subscription_schedule.created", schedule, None, clock)
    core.emit("customer.subscription.updated", sub, previous, clock)
    return schedule


@route("GET", "/v1/subscription_schedules/{id}")
def get_schedule(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get(KIND, req.args[0], "subscription schedule")


@route("GET", "/v1/subscription_schedules")
def list_schedules(req: Request) -> dict[str, Any]:
    p = validate(
        req.params, {**LIST, "customer": s, "scheduled": b, "completed_at": s, "canceled_at": s, "released_at": s}
    )
    found = [x for x in req.core.store.all(KIND) if "customer" not in p or x["customer"] == p["customer"]]
    return req.core.page(found, p, "/v1/subscription_schedules")


def _live(core: Core, schedule_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    schedule = core.store.get(KIND, schedule_id, "subscription schedule")
    if schedule["status"] not in ("active", "not_started"):
        raise StripeError(f"You cannot update a subscription schedule that is {schedule['status']}.", param="id")
    return schedule, core.store.get("subscription", schedule["subscription"])


@route("POST", "/v1/subscription_schedules/{id}")
def update_schedule(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "phases": arr(PHASE),
            "end_behavior": enum("release", "cancel"),
            "metadata": metadata,
            "proration_behavior": PRORATION,
            **EXPAND,
        },
    )
    core = req.core
    schedule, sub = _live(core, req.args[0])
    clock = core.clock_of(sub["customer"])
    if "phases" in p:
        schedule["phases"] = _new_phases(req, schedule, sub, p["phases"])
        current = schedule["phases"][0]
        schedule["current_phase"] = {"start_date": current["start_date"], "end_date": current["end_date"]}
    if "end_behavior" in p:
        schedule["end_behavior"] = p["end_behavior"]
    if "metadata" in p:
        schedule["metadata"] = merge_metadata(schedule["metadata"], p["metadata"])
    core.emit("subscription_schedule.updated", schedule, None, clock)
    return schedule


def _new_phases(
    req: Request, schedule: dict[str, Any], sub: dict[str, Any], specs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The phases of an update, checked: the current phase first and unchanged, then sequential phases
    that each begin at one of the subscription's period ends."""
    if not specs:
        raise invalid("phases", "A subscription schedule needs at least one phase.")
    current = schedule["current_phase"]
    first = specs[0]
    if first.get("start_date") not in (None, current["start_date"]):
        raise invalid(
            "phases[0][start_date]",
            "The first phase must be the current phase (its start_date is "
            f"{current['start_date']}); the emulator does not accept past or replaced phases.",
        )
    if [(x["price"], x.get("quantity")) for x in first["items"]] != [
        (x["price"]["id"], x["quantity"]) for x in billing.items(sub)
    ]:
        raise invalid(
            "phases[0][items]",
            "The emulator does not change the current phase's items through a "
            "schedule; update the subscription instead.",
        )
    interval = billing.items(sub)[0]["price"]["recurring"]
    out: list[dict[str, Any]] = []
    start = current["start_date"]
    for n, spec in enumerate(specs):
        if n and spec.get("start_date") not in (None, start):
            raise invalid(f"phases[{n}][start_date]", "Each phase must start when the one before ends.")
        end = _phase_end(spec, start, sub, n, last=n == len(specs) - 1)
        if end <= start:
            raise invalid(f"phases[{n}][end_date]", "A phase must end after it starts.")
        items = []
        for k, item in enumerate(spec["items"]):
            param = f"phases[{n}][items][{k}][price]"
            price = check_price(
                req, item["price"], param, sub["currency"], (interval["interval"], interval["interval_count"])
            )
            if billing.is_metered(price) and item.get("quantity") is not None:
                raise invalid(
                    f"phases[{n}][items][{k}][quantity]",
                    "Quantity should not be specified where usage_type is `metered`.",
                )
            quantity = None if billing.is_metered(price) else item.get("quantity", 1)
            items.append(
                {
                    "price": price["id"],
                    "quantity": quantity,
                    "metadata": item.get("metadata", {}),
                    "discounts": [],
                    "tax_rates": [],
                    "plan": price["id"],
                    "billing_thresholds": None,
                }
            )
        if not items:
            raise invalid(f"phases[{n}][items]", "Each phase needs at least one item.")
        out.append(
            _phase(
                sub,
                items,
                start,
                end,
                meta=spec.get("metadata", {}),
                proration=spec.get("proration_behavior", "create_prorations"),
            )
        )
        start = end
    return out


def _phase_end(spec: dict[str, Any], start: int, sub: dict[str, Any], n: int, *, last: bool) -> int:
    """The phase's end, which must be a period end of the subscription (an emulator limitation)."""
    if "end_date" in spec and "duration" in spec:
        raise invalid(f"phases[{n}][duration]", "If duration is set, end_date must not be set.")
    rec = billing.items(sub)[0]["price"]["recurring"]
    if "duration" in spec:
        duration = spec["duration"]
        if duration["interval"] != rec["interval"]:
            raise invalid(
                f"phases[{n}][duration][interval]",
                "The emulator supports phase durations in the subscription's own interval only.",
            )
        periods = duration.get("interval_count", 1)
    elif "end_date" in spec:
        end = spec["end_date"]
        if end == "now":
            raise invalid(f"phases[{n}][end_date]", "end_date=now is not supported by this emulator.")
        boundary, periods = start, 0
        while boundary < end and periods < 1200:
            boundary = billing.period_end(sub, boundary)
            periods += 1
        if boundary != end:
            raise invalid(
                f"phases[{n}][end_date]",
                f"The emulator changes phases only at the subscription's period ends; {end} is not one.",
            )
        return int(end)
    else:
        # Neither given: one interval (guess; Stripe computes a default end from the prices' interval).
        periods = 1
    end = start
    for _ in range(periods):
        end = billing.period_end(sub, end)
    return end


@route("POST", "/v1/subscription_schedules/{id}/release")
def release_schedule(req: Request) -> dict[str, Any]:
    validate(req.params, {"preserve_cancel_date": b, **EXPAND})
    schedule, sub = _live(req.core, req.args[0])
    release(req.core, schedule, sub)
    return schedule


def release(core: Core, schedule: dict[str, Any], sub: dict[str, Any]) -> None:
    """ "releasing it will remove its subscription property and set the subscription's ID to the
    released_subscription property"; the subscription keeps its current items."""
    clock = core.clock_of(sub["customer"])
    schedule.update(
        status="released",
        released_at=core.now(clock),
        released_subscription=sub["id"],
        subscription=None,
        current_phase=None,
    )
    previous = {"schedule": sub.get("schedule")}
    sub["schedule"] = None
    core.emit("subscription_schedule.released", schedule, None, clock)
    core.emit("customer.subscription.updated", sub, previous, clock)


@route("POST", "/v1/subscription_schedules/{id}/cancel")
def cancel_schedule(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"invoice_now": b, "prorate": b, **EXPAND})
    core = req.core
    schedule, sub = _live(core, req.args[0])
    clock = core.clock_of(sub["customer"])
    # "Cancels a subscription schedule and its associated subscription immediately".
    schedule.update(status="canceled", canceled_at=core.now(clock), current_phase=None)
    sub["schedule"] = None
    billing.cancel(core, sub, invoice_now=p.get("invoice_now", True), prorate=p.get("prorate", True))
    core.emit("subscription_schedule.canceled", schedule, None, clock)
    return schedule


def enter_next_phase(
    core: Core, sub: dict[str, Any], boundary: int
) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """At a period end: the subscription's schedule moves to its next phase, if one starts here.

    Returns (items removed from the subscription, the metadata before, if it changed). Called by
    `billing.renew` before the new period's invoice is made, so that the finished period's usage
    is billed on the items that accrued it and the new period's fees on the new phase's items.
    """
    schedule = core.store.maybe(KIND, sub.get("schedule") or "")
    if schedule is None or schedule["status"] != "active":
        return [], None
    phases = schedule["phases"]
    index = next((n for n, ph in enumerate(phases) if ph["end_date"] == boundary), None)
    if index is None:
        return [], None
    clock = core.clock_of(sub["customer"])
    if index == len(phases) - 1:
        if schedule["end_behavior"] == "cancel":
            sub["cancel_at_period_end"] = True  # billing.renew ends it at this boundary
            schedule.update(status="completed", completed_at=boundary, current_phase=None)
            core.emit("subscription_schedule.completed", schedule, None, clock)
        else:
            release(core, schedule, sub)
        return [], None
    nxt = phases[index + 1]
    wanted = {x["price"]: x for x in nxt["items"]}
    removed = [item for item in billing.items(sub) if item["price"]["id"] not in wanted]
    kept = {item["price"]["id"] for item in billing.items(sub)} - {item["price"]["id"] for item in removed}
    for item in removed:
        billing.items(sub).remove(item)
        item["_deleted"] = True
    for price_id, spec in wanted.items():
        if price_id in kept:
            item = next(x for x in billing.items(sub) if x["price"]["id"] == price_id)
            if spec["quantity"] is not None:
                item["quantity"] = spec["quantity"]
            continue
        price = core.store.get("price", price_id)
        billing.items(sub).append(
            billing.new_item(core, sub, price, spec["quantity"], dict(spec["metadata"]), boundary)
        )
    sub["items"]["total_count"] = len(billing.items(sub))
    before = None
    if nxt["metadata"]:
        before = dict(sub["metadata"])
        # "Metadata on a schedule's phase will update the underlying subscription's metadata when the
        # phase is entered, adding new keys and replacing existing keys".
        sub["metadata"] = merge_metadata(sub["metadata"], nxt["metadata"])
    schedule["current_phase"] = {"start_date": nxt["start_date"], "end_date": nxt["end_date"]}
    core.emit("subscription_schedule.updated", schedule, None, clock)
    return removed, before
