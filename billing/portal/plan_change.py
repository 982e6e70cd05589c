"""Changing plan: a paid subscription moves to another product, keeping its APIM subscription and keys.

- **Upgrade** (a higher price, `billing.pricing.is_upgrade`): at once. One Stripe update swaps the flat
  fee and adds the new product's metered price with `proration_behavior=always_invoice` (the prorated
  difference is invoiced and charged now) and `payment_behavior=error_if_incomplete` ("return an HTTP
  402 status code if a subscription's invoice cannot be paid ... this parameter does not update the
  subscription"): nobody gets the pricier product without paying for it. Its metadata names the new
  product, the previous one and when each began (Stripe's time). Then APIM moves the subscription to
  the new product's scope (the webhook's sync does the same, idempotently; so does reconcile after a
  crash). A job, queued just before the Stripe update and doing its work only if Stripe's metadata names
  this upgrade (its old item and instant), waits the report lag, reports the old product's calls up to
  the change to its meter and removes its metered price (`billing.usage.plan_change`). The Stripe
  idempotency key names the subscription, the part of the period it leaves and the payment method, so
  two different upgrades from the same part cannot both happen, and a declined card once replaced can.
- **Downgrade**: at the period end, through a subscription schedule made `from_subscription`, whose
  second phase has the new prices and the metadata of the change ("Metadata on a schedule's phase will
  update the underlying subscription's metadata when the phase is entered"). The key keeps the higher
  limits until then; Stripe's `customer.subscription.updated` at the phase change makes the sync move
  the APIM subscription (`billing.access.sync`). Undone by releasing the schedule.
- **Free**: the paid subscription ends at its period end (`cancel_at_period_end`) and is followed by a
  subscription to the free product (the sync, when Stripe ends it). Undone by keeping it on.
- Free to paid goes through Checkout, as any subscription does (`billing.portal.subscribe`).

Only the owner may change a subscription: the APIM subscription's owner and the Stripe subscription's
metadata must both name the signed-in consumer. A consumer who owes money cannot upgrade, nor change a
subscription that is not active; one change at a time. Pure decisions over ports; adapters in
`billing.adapters.portal_plan_change`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from billing import catalog_names as names
from billing.models import MonetizationModels, Product, UnknownProductError
from billing.portal.ports import ApimSubscription, Debt
from billing.portal.unsubscribe import is_paid_subscription
from billing.pricing import format_minor, included_calls_for_part, is_upgrade, prorated_fee
from billing.usage.batches import PlanChangeRequest
from billing.usage.windows import Period


class ChangeKind(StrEnum):
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    TO_FREE = "to_free"


@dataclass(frozen=True)
class PlanItem:
    item_id: str
    price_id: str
    lookup_key: str
    metered: bool
    quantity: int | None


@dataclass(frozen=True)
class StripePlan:
    """What the Stripe subscription says about its plan."""

    subscription_id: str
    status: str
    customer_id: str
    metadata: Mapping[str, str]
    items: tuple[PlanItem, ...]
    period_start: int
    period_end: int
    clock_now: int | None  # the test clock's time (Stripe's present in test mode); None: real time
    schedule_id: str | None = None
    scheduled_product: str | None = None  # what the schedule's next phase moves it to
    scheduled_at: int | None = None
    cancel_at_period_end: bool = False
    payment_method: str = ""  # what an invoice of the subscription is charged to (its default, else the customer's)

    def present(self, now: int) -> int:
        return self.clock_now if self.clock_now is not None else now

    @property
    def since(self) -> int:
        """Where the current product's part of the period starts."""
        value = self.metadata.get(names.SUB_META_PRODUCT_SINCE, "")
        return max(self.period_start, int(value)) if value.isdigit() else self.period_start


@dataclass(frozen=True)
class Pending:
    """A change that takes effect at the period end, shown as "changes to X on <date>"."""

    product_id: str
    product_name: str
    at: int

    @property
    def date(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d")


class PaymentFailed(Exception):
    """The upgrade's prorated invoice could not be paid; Stripe changed nothing."""


class ChangeConflict(Exception):
    """Another change of the same subscription happened or is in progress."""


class PlanChangesPort(Protocol):
    def current(self, subscription_id: str) -> StripePlan | None: ...

    def upgrade(
        self,
        subscription_id: str,
        items: Sequence[Mapping[str, object]],
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> None:
        """Update the items at once, invoicing and charging the prorations; PaymentFailed if the charge fails
        (then nothing changed), ChangeConflict if the key was used for other parameters."""
        ...

    def schedule_downgrade(
        self, plan: StripePlan, next_items: Sequence[tuple[str, int | None]], metadata: Mapping[str, str]
    ) -> None:
        """A schedule from the subscription whose next phase, from the period end, has `next_items`."""
        ...

    def release_schedule(self, schedule_id: str) -> None: ...

    def end_at_period_end(self, subscription_id: str, next_product: str) -> None: ...

    def keep_on(self, subscription_id: str) -> None:
        """Undo `end_at_period_end`."""
        ...

    def move_scope(self, subscription_id: str, product_id: str) -> None:
        """APIM: the subscription (same keys) to the product's scope."""
        ...

    def report_old_usage_later(self, request: PlanChangeRequest) -> None:
        """Queue the old product's closing report and price removal, after the report lag."""
        ...


class SubscriptionLookup(Protocol):
    """What `subject` needs of `billing.portal.ports.ApimPort`."""

    def get_subscription(self, sid: str) -> ApimSubscription | None: ...


class Charges(Protocol):
    """What a change needs of `billing.portal.ports.PaymentsPort`."""

    def outstanding_invoices(self, uid: str, email: str | None) -> Sequence[Debt]: ...

    def pending_final_invoices(self, uid: str) -> Sequence[str]: ...

    def price_ids(self, lookup_keys: Sequence[str]) -> dict[str, str]: ...


class PlanChangeError(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Quote:
    """What the consumer sees before confirming (amounts from the pricing engine)."""

    kind: ChangeKind
    current: Product
    target: Product
    effective_at: int  # Stripe's time: now for an upgrade, the period end otherwise
    due_now: str = ""  # upgrade: the prorated difference charged at once
    included_now: int = 0  # upgrade: the target's included calls for the rest of the period
    monthly_from_next: str = ""  # the target's monthly fee from the next period on
    monthly_difference: str = ""  # target's fee minus current's, a month


@dataclass(frozen=True)
class Subject:
    """A subscription the signed-in consumer may change, as both APIM and Stripe state it."""

    uid: str
    sid: str
    name: str
    product: Product
    plan: StripePlan

    def pending(self, models: MonetizationModels) -> Pending | None:
        plan = self.plan
        target: str | None = None
        at = plan.period_end
        if plan.scheduled_product:
            target, at = plan.scheduled_product, plan.scheduled_at or plan.period_end
        elif plan.cancel_at_period_end and plan.metadata.get(names.SUB_META_NEXT_PRODUCT):
            target = plan.metadata[names.SUB_META_NEXT_PRODUCT]
        if target is None:
            return None
        try:
            label = models.product(target).display_name
        except UnknownProductError:
            label = target
        return Pending(target, label, at)


def subject(
    uid: str, sid: str, *, models: MonetizationModels, apim: SubscriptionLookup, changes: PlanChangesPort
) -> Subject:
    """The subscription, if `uid` owns it in APIM and in Stripe and it can change plan now."""
    sub = apim.get_subscription(sid) if is_paid_subscription(sid) else None
    if sub is None or sub.owner_id != uid:
        # The same answer for another's subscription as for none: nothing about it is revealed.
        raise PlanChangeError("there is no such subscription of yours", status=404)
    plan = changes.current(sid)
    if plan is None or plan.metadata.get(names.SUB_META_APIM_USER) != uid:
        raise PlanChangeError("there is no such subscription of yours", status=404)
    if plan.metadata.get(names.SUB_META_PRODUCT) != sub.product_id:
        raise PlanChangeError("this subscription is being changed; try again in a minute", status=409)
    if sub.state != "active" or plan.status != "active" or plan.metadata.get(names.SUB_META_ACCESS_ENDED):
        raise PlanChangeError(
            f"the subscription “{sub.display_name}” is {sub.state}: only an active, paid subscription can change plan",
            status=409,
        )
    try:
        product = models.product(sub.product_id or "")
    except UnknownProductError:
        raise PlanChangeError("this subscription's product is no longer sold", status=409) from None
    return Subject(uid, sid, sub.display_name, product, plan)


def targets(subject_: Subject, models: MonetizationModels) -> list[Product]:
    """The products the subscription can move to (same currency; Free only through `TO_FREE`)."""
    return [p for p in models.products if p.id != subject_.product.id and p.currency == subject_.product.currency]


def kind_of(current: Product, target: Product) -> ChangeKind:
    if not target.is_paid:
        return ChangeKind.TO_FREE
    return ChangeKind.UPGRADE if is_upgrade(current, target) else ChangeKind.DOWNGRADE


def _money(product: Product, minor: int) -> str:
    return format_minor(minor, product.currency, product.currency_exponent)


def quote_change(subject_: Subject, target: Product, now: int) -> Quote:
    plan, current = subject_.plan, subject_.product
    kind = kind_of(current, target)
    difference = _money(target, target.flat_fee_minor - current.flat_fee_minor)
    if kind is not ChangeKind.UPGRADE:
        return Quote(
            kind,
            current,
            target,
            plan.period_end,
            monthly_from_next=_money(target, target.flat_fee_minor),
            monthly_difference=difference,
        )
    at = plan.present(now)
    start, end = plan.period_start, plan.period_end
    due = prorated_fee(target, start, end, at, end) - prorated_fee(current, start, end, at, end)
    return Quote(
        kind,
        current,
        target,
        at,
        due_now=_money(target, due),
        included_now=included_calls_for_part(target, start, end, at),
        monthly_from_next=_money(target, target.flat_fee_minor),
        monthly_difference=difference,
    )


def _check_free_to_change(subject_: Subject) -> None:
    plan = subject_.plan
    if plan.metadata.get(names.SUB_META_RETIRING_ITEM):
        raise PlanChangeError(
            "the last plan change is still being completed (its usage so far is billed once "
            "API Management's data has it); try again in a few minutes",
            status=409,
        )
    if plan.schedule_id or plan.cancel_at_period_end:
        raise PlanChangeError("a change is already planned for the end of the period: undo it first", status=409)


def change_plan(
    subject_: Subject,
    target: Product,
    *,
    now: int,
    nonce: str,
    payments: Charges,
    changes: PlanChangesPort,
    email: str | None = None,
) -> Quote:
    """Make the change (see the module's description); the quote of what was done."""
    current, plan = subject_.product, subject_.plan
    if target.id == current.id:
        raise PlanChangeError(f"the subscription is on {current.display_name} already", status=409)
    if target.currency != current.currency:
        raise PlanChangeError("a plan change keeps the currency; subscribe to this product instead")
    _check_free_to_change(subject_)
    quote = quote_change(subject_, target, now)
    if quote.kind is ChangeKind.TO_FREE:
        changes.end_at_period_end(subject_.sid, names.apim_product_id(target.id))
        return quote
    prices = _prices(payments, target)
    next_meta = {
        names.SUB_META_PRODUCT: names.apim_product_id(target.id),
        names.SUB_META_PREVIOUS_PRODUCT: names.apim_product_id(current.id),
        names.SUB_META_PREVIOUS_SINCE: str(plan.since),
    }
    if quote.kind is ChangeKind.DOWNGRADE:
        changes.schedule_downgrade(plan, prices, {**next_meta, names.SUB_META_PRODUCT_SINCE: str(plan.period_end)})
        return quote
    if any(debt.amount_remaining > 0 for debt in payments.outstanding_invoices(subject_.uid, email)):
        raise PlanChangeError("you have unpaid invoices: pay them first, then upgrade", status=402)
    if payments.pending_final_invoices(subject_.uid):
        raise PlanChangeError(
            "a subscription you cancelled is still being billed; upgrade once its final invoice is paid", status=402
        )
    _upgrade(subject_, target, quote, prices, next_meta, nonce, changes)
    return quote


def _prices(payments: Charges, product: Product) -> list[tuple[str, int | None]]:
    keys = [names.flat_price_lookup_key(product.id)] if product.flat_fee_minor else []
    if product.is_metered:
        keys.append(names.usage_price_lookup_key(product.id))
    found = payments.price_ids(keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise PlanChangeError(f"{product.display_name} cannot be bought yet: its Stripe prices are missing", status=503)
    return [(found[k], None if k.endswith("-usage") else 1) for k in keys]


def _upgrade(  # noqa: PLR0917
    subject_: Subject,
    target: Product,
    quote: Quote,
    prices: list[tuple[str, int | None]],
    next_meta: dict[str, str],
    nonce: str,
    changes: PlanChangesPort,
) -> None:
    plan = subject_.plan
    at = quote.effective_at
    old_flat = next((i for i in plan.items if not i.metered), None)
    old_usage = next((i for i in plan.items if i.metered), None)
    items: list[dict[str, object]] = []
    for price, quantity in prices:
        if quantity is not None and old_flat is not None:
            items.append({"id": old_flat.item_id, "price": price})
        elif quantity is not None:
            items.append({"price": price, "quantity": quantity})
        else:
            items.append({"price": price})
    if old_flat is not None and not any("id" in i for i in items):
        items.append({"id": old_flat.item_id, "deleted": True})
    metadata = {
        **next_meta,
        names.SUB_META_PRODUCT_SINCE: str(at),
        names.SUB_META_RETIRING_ITEM: old_usage.item_id if old_usage else "",
    }
    # One upgrade from this part of the period, whatever the form: Stripe refuses the key's reuse with
    # other parameters (a second tab asking for another product), and replays it for a double submit.
    # Stripe also saves a failed first answer ("regardless of whether it succeeds or fails. Subsequent
    # requests with the same key return the same result", docs.stripe.com/idempotency), so the payment
    # method is part of the key: once a declined card is replaced, the upgrade is a new request (with the
    # same card it is the same request, and Stripe answers the same decline again).
    part = hashlib.sha256(
        f"{subject_.sid}\n{subject_.product.id}\n{plan.since}\n{plan.payment_method}".encode()
    ).hexdigest()[:32]
    del nonce  # the key deliberately does not depend on the form
    if old_usage is not None:
        # Queued before Stripe is asked, so that no crash between the two leaves the old product's last
        # calls unbilled and its metered item on the subscription for good: the job does its work only
        # if the subscription's metadata names this very upgrade (item and instant), so a declined card,
        # a conflicting tab or a replayed double submit (its own instant) leaves it nothing to do.
        changes.report_old_usage_later(
            PlanChangeRequest(
                subject_.sid,
                names.apim_product_id(subject_.product.id),
                Period(plan.period_start, plan.period_end),
                plan.since,
                at,
                old_usage.item_id,
            )
        )
    changes.upgrade(subject_.sid, items, metadata, f"plan-upgrade-{part}")
    changes.move_scope(subject_.sid, names.apim_product_id(target.id))


def undo(subject_: Subject, changes: PlanChangesPort) -> Pending | None:
    """Undo the change planned for the period end; what was undone (None: nothing was planned)."""
    plan = subject_.plan
    if plan.schedule_id:
        changes.release_schedule(plan.schedule_id)
    elif plan.cancel_at_period_end and plan.metadata.get(names.SUB_META_NEXT_PRODUCT):
        changes.keep_on(subject_.sid)
    else:
        return None
    return Pending(plan.scheduled_product or plan.metadata.get(names.SUB_META_NEXT_PRODUCT, ""), "", plan.period_end)
