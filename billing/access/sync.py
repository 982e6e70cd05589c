"""Make APIM and the subscription link match a Stripe subscription's current state.

Used by every webhook handler and by reconcile. Concurrency: the link row's ETag serialises
writers of one subscription. A writer reads the link, then Stripe, then changes APIM, then writes
the link only if nobody wrote it meanwhile; a loser starts again with fresh reads, so the last
APIM change always comes from the freshest Stripe read, whatever order events arrive in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from billing.access.deadline import Deadline
from billing.access.decisions import (
    AccessPlan,
    AccessTarget,
    ApimState,
    ApimView,
    MetadataProblem,
    UnknownStripeStatus,
    access_target,
    decide,
    plan_access,
)
from billing.access.limits import threshold_to_set
from billing.access.ports import AccessPorts
from billing.access.stripe_objects import MalformedObject, SubscriptionSnapshot, subscription_snapshot
from billing.access.trials import trial_refusal
from billing.catalog_names import (
    SUB_META_NEXT_PRODUCT,
    SUB_META_PREVIOUS_PRODUCT,
    SUB_META_PREVIOUS_SINCE,
    SUB_META_PRODUCT_SINCE,
    free_subscription_id,
)
from billing.records import SubscriptionLink

log = logging.getLogger(__name__)

APIM_CALL_TIMEOUT = 5.0  # seconds per APIM call; APIM answers these in well under a second
MAX_ATTEMPTS = 5


class ConcurrentUpdates(RuntimeError):
    """Other writers kept changing the link; the event is retried later."""


@dataclass(frozen=True)
class SyncResult:
    subscription_id: str
    outcome: str  # "changed", "unchanged", "ignored"
    detail: str
    plan: AccessPlan | None = None


def sync_subscription(
    subscription_id: str,
    ports: AccessPorts,
    *,
    event_created: int,
    deadline: Deadline | None = None,
    known: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> SyncResult:
    """Apply the subscription's current Stripe state; `known` is a freshly listed copy (reconcile)."""
    deadline = deadline or Deadline.unbounded()
    for _ in range(MAX_ATTEMPTS):
        existing = ports.links.get(subscription_id)
        deadline.step_timeout(APIM_CALL_TIMEOUT)
        raw = known if known is not None else ports.stripe.retrieve(subscription_id)
        known = None  # a retry after a lost race reads Stripe again
        if raw is None:
            return SyncResult(subscription_id, "ignored", "Stripe has no such subscription")
        try:
            snapshot = subscription_snapshot(raw)
            target = access_target(snapshot.metadata, snapshot.product_ids)
            desired = decide(snapshot.state)
            previous_product = snapshot.metadata.get(SUB_META_PREVIOUS_PRODUCT, "")
            if existing is not None:
                _check_link(existing[0], target, previous_product)
            current = ports.apim.get(subscription_id, deadline.step_timeout(APIM_CALL_TIMEOUT))
            moved = _moved_product(current, target, previous_product, desired)
            if moved is not None:
                current = moved
            plan = plan_access(desired, target, current)
        except (MetadataProblem, UnknownStripeStatus, MalformedObject) as problem:
            return SyncResult(subscription_id, "ignored", str(problem))
        if dry_run:
            return SyncResult(
                subscription_id,
                "changed" if plan.changes_anything else "unchanged",
                plan.describe(subscription_id, target),
                plan,
            )
        refusal = _refusal(ports, snapshot, target, plan, deadline)
        if refusal is not None:
            ports.stripe.cancel_refused(subscription_id)
            log.warning("subscription %s refused at its first grant: %s", subscription_id, refusal)
            return SyncResult(subscription_id, "ignored", f"refused and cancelled: {refusal}")
        _apply_to_apim(ports, subscription_id, target, plan, deadline, moved_from=previous_product if moved else "")
        if (
            existing is not None
            and target.product_id in ports.quota_resets
            and (snapshot.period_start > existing[0].current_period_start)
        ):
            # Stripe started the next period: so does the quota (its window is the billing period).
            ports.apim.reset_quota(subscription_id, deadline.step_timeout(APIM_CALL_TIMEOUT))
        if plan.desired is ApimState.CANCELLED and (existing is None or existing[0].apim_state != "cancelled"):
            _follow_with_free_product(ports, snapshot, target, deadline)
        link = _link(snapshot, target, plan, existing[0] if existing else None, event_created)
        if _store_link(ports, link, existing, plan):
            _keep_spending_limit(ports, snapshot, target)
            outcome = "changed" if plan.changes_anything else "unchanged"
            return SyncResult(subscription_id, outcome, plan.describe(subscription_id, target), plan)
        log.info("link of %s changed while syncing; reading again", subscription_id)
    raise ConcurrentUpdates(f"{subscription_id}: the link kept changing during {MAX_ATTEMPTS} attempts")


def _keep_spending_limit(ports: AccessPorts, snapshot: SubscriptionSnapshot, target: AccessTarget) -> None:
    """Write the product's spending limit on the subscription if it lacks it. After access and the link
    are settled: a failure here only waits for the next event or the hourly reconcile to try again."""
    threshold = threshold_to_set(snapshot, target.product_id, ports.spending_limits)
    if threshold is None:
        return
    try:
        ports.stripe.set_billing_threshold(snapshot.id, threshold)
    except Exception:  # any Stripe failure: the access decision above must stand regardless
        log.exception("spending limit not set on %s; the next sync tries again", snapshot.id)


def _refusal(
    ports: AccessPorts, snapshot: SubscriptionSnapshot, target: AccessTarget, plan: AccessPlan, deadline: Deadline
) -> str | None:
    """Why a subscription's first grant of a key must not happen, if it must not.

    The portal refuses a second subscription to a product and any new one while something is owed,
    but a Checkout page can be completed long after the portal's check (another tab, a kept page):
    the first grant checks again. A second subscription would also bill every metered call twice,
    since Stripe meters count per customer, not per subscription.
    """
    first_grant = plan.desired is ApimState.ACTIVE and (plan.create or plan.change_from == ApimState.SUBMITTED.value)
    if not first_grant:
        return None
    others = [
        sid
        for sid in ports.apim.holders(target.user_id, target.product_id, deadline.step_timeout(APIM_CALL_TIMEOUT))
        if sid != snapshot.id
    ]
    if others:
        return f"user {target.user_id} holds product {target.product_id} already ({', '.join(others)})"
    owed = ports.stripe.owed(snapshot.customer_id, snapshot.id)
    if owed > 0:
        return f"customer {snapshot.customer_id} owes {owed} (minor units) on other invoices"
    ending = ports.stripe.ending(snapshot.customer_id, snapshot.id)
    if ending:
        # A cancelled subscription whose final invoice is still to come is not owed yet, but may be:
        # no new key before it is made (and paid), as the portal refuses a new Checkout meanwhile.
        return f"customer {snapshot.customer_id} has a final invoice to come for {', '.join(ending)}"
    return trial_refusal(ports, snapshot, target)


def _apply_to_apim(
    ports: AccessPorts, sid: str, target: AccessTarget, plan: AccessPlan, deadline: Deadline, *, moved_from: str
) -> None:
    if moved_from:
        # A plan change (an upgrade at once, a downgrade's schedule phase at the period end): the keys
        # stay, the new product's quota and rate limit apply from the next call.
        ports.apim.set_scope(sid, target.product_id, deadline.step_timeout(APIM_CALL_TIMEOUT))
        log.info("subscription %s moved from product %s to %s", sid, moved_from, target.product_id)
    if plan.create:
        ports.apim.create(sid, target, plan.desired, deadline.step_timeout(APIM_CALL_TIMEOUT))
    elif plan.change_from is not None:
        ports.apim.set_state(sid, plan.desired, deadline.step_timeout(APIM_CALL_TIMEOUT))


def _moved_product(
    current: ApimView | None, target: AccessTarget, previous_product: str, desired: ApimState
) -> ApimView | None:
    """APIM's view once the subscription is moved to the target product, when Stripe's metadata says it
    changed plan from the product APIM still has; None when there is nothing to move."""
    if current is None or current.product_id == target.product_id or desired is ApimState.CANCELLED:
        return None
    if not previous_product or current.product_id != previous_product:
        return None  # another product than the one it changed from: plan_access refuses it
    return replace(current, product_id=target.product_id)


def _follow_with_free_product(
    ports: AccessPorts, snapshot: SubscriptionSnapshot, target: AccessTarget, deadline: Deadline
) -> None:
    """A move to a free product takes effect when the paid subscription ends at its period end: the
    consumer gets the free product's subscription then (never after a cancellation of their own)."""
    free = snapshot.metadata.get(SUB_META_NEXT_PRODUCT, "")
    ended = snapshot.state.status in ("canceled", "incomplete_expired") or snapshot.state.ended_at
    if not free or free not in ports.free_products or not ended or snapshot.state.access_ended:
        return
    sid = free_subscription_id(free, target.user_id)
    existing = ports.apim.get(sid, deadline.step_timeout(APIM_CALL_TIMEOUT))
    if existing is not None and existing.user_id not in (None, target.user_id):
        log.warning("subscription %s: the free subscription %s belongs to another user", snapshot.id, sid)
        return
    if existing is not None and existing.state == ApimState.ACTIVE.value:
        return
    name = f"{target.subscription_name}"[:100]
    ports.apim.create(
        sid, AccessTarget(target.user_id, free, name), ApimState.ACTIVE, deadline.step_timeout(APIM_CALL_TIMEOUT)
    )
    log.info(
        "subscription %s ended at its period end; user %s now has product %s (%s)",
        snapshot.id,
        target.user_id,
        free,
        sid,
    )


def _check_link(link: SubscriptionLink, target: AccessTarget, previous_product: str = "") -> None:
    if link.apim_user_id == target.user_id and previous_product and link.product_id == previous_product:
        return  # a plan change the link has not seen yet
    if (link.apim_user_id, link.product_id) != (target.user_id, target.product_id):
        raise MetadataProblem(
            f"metadata says user {target.user_id}, product {target.product_id}; the link recorded "
            f"user {link.apim_user_id}, product {link.product_id}"
        )


def _link(
    snapshot: SubscriptionSnapshot,
    target: AccessTarget,
    plan: AccessPlan,
    previous: SubscriptionLink | None,
    event_created: int,
) -> SubscriptionLink:
    return SubscriptionLink(
        apim_subscription_id=snapshot.id,
        apim_user_id=target.user_id,
        product_id=target.product_id,
        subscription_name=target.subscription_name,
        stripe_customer_id=snapshot.customer_id,
        stripe_subscription_id=snapshot.id,
        stripe_usage_item_id=snapshot.usage_item_id,
        stripe_status=snapshot.state.status,
        apim_state=plan.desired.value,
        current_period_start=snapshot.period_start,
        current_period_end=snapshot.period_end,
        stripe_state_at=max(event_created, previous.stripe_state_at if previous else 0),
        canceled_at=snapshot.canceled_at,
        product_since=_meta_int(snapshot.metadata, SUB_META_PRODUCT_SINCE),
        previous_product_id=snapshot.metadata.get(SUB_META_PREVIOUS_PRODUCT, ""),
        previous_since=_meta_int(snapshot.metadata, SUB_META_PREVIOUS_SINCE),
    )


def _meta_int(metadata: Mapping[str, str], key: str) -> int:
    value = metadata.get(key, "")
    return int(value) if value.isdigit() else 0


def _store_link(
    ports: AccessPorts,
    link: SubscriptionLink,
    existing: tuple[SubscriptionLink, str] | None,
    plan: AccessPlan,
) -> bool:
    if existing is None:
        return ports.links.create_if_absent(link)
    old, etag = existing
    if old == link and not plan.changes_anything:
        return True  # nothing to record, and nothing was changed that others must see
    return ports.links.replace_if_unchanged(link, etag)
