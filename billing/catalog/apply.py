"""Executing a plan through the project's own small interfaces (adapters implement them)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

from billing.catalog.desired import ApimProductSpec, MeterSpec, PriceSpec, StripeProductSpec
from billing.catalog.plan import (
    Action,
    CreateMeter,
    CreatePrice,
    CreateStripeProduct,
    Plan,
    PutApimPolicy,
    PutApimProduct,
    PutPortalConfig,
    SetApimLink,
    SetMeterActive,
    UnpublishApimProduct,
    UpdateMeter,
    UpdatePrice,
    UpdateStripeProduct,
)
from billing.catalog.state import CatalogServiceError


class StripeCatalogWriter(Protocol):
    def create_product(self, spec: StripeProductSpec, idempotency_key: str) -> None: ...
    def update_product(self, op: UpdateStripeProduct) -> None: ...
    def create_meter(self, spec: MeterSpec, idempotency_key: str) -> str: ...
    def update_meter(self, meter_id: str, display_name: str) -> None: ...
    def set_meter_active(self, meter_id: str, active: bool) -> None: ...
    def create_price(self, spec: PriceSpec, meter_id: str | None, transfer: bool, idempotency_key: str) -> str: ...
    def update_price(self, op: UpdatePrice) -> None: ...
    def put_portal_config(self, op: PutPortalConfig, idempotency_key: str) -> str: ...


class ApimCatalogWriter(Protocol):
    def put_product(self, spec: ApimProductSpec, exists: bool) -> None: ...
    def put_policy(self, product_id: str, policy_xml: str, exists: bool) -> None: ...
    def unpublish_product(self, product_id: str) -> None: ...
    def set_link(self, op: SetApimLink) -> None: ...


class ApplyFailed(CatalogServiceError):
    """An action failed; `done` actions were applied before it. Rerunning apply finishes the job."""

    def __init__(self, action: Action, cause: CatalogServiceError, done: int) -> None:
        self.action, self.cause, self.done = action, cause, done
        super().__init__(f"{action.headline()} failed: {cause}")


def idempotency_key(op: object) -> str:
    """Derived from everything the create sends, so a retried POST is never doubled by Stripe.

    Only creates use one: updates are idempotent by nature, and a key reused within Stripe's
    24 hours for a toggle back (archive, reactivate, archive) would replay a stale answer.
    """
    return "catalog-" + hashlib.sha256(repr(op).encode()).hexdigest()[:40]


Progress = Callable[[Action, str], None]


def apply_plan(
    plan: Plan,
    stripe: StripeCatalogWriter | None,
    apim: ApimCatalogWriter | None,
    progress: Progress | None = None,
) -> int:
    """Run the plan's actions in order; the number applied. Raises ApplyFailed on the first failure."""
    if plan.problems:
        raise CatalogServiceError("the plan has problems apply cannot fix:\n  " + "\n  ".join(plan.problems))
    meter_ids = dict(plan.meter_ids)
    done = 0
    for action in plan.actions:
        try:
            result = _run(action, stripe, apim, meter_ids)
        except CatalogServiceError as exc:
            raise ApplyFailed(action, exc, done) from exc
        done += 1
        if progress is not None:
            progress(action, result)
    return done


def _run(
    action: Action, stripe: StripeCatalogWriter | None, apim: ApimCatalogWriter | None, meter_ids: dict[str, str]
) -> str:
    op = action.op
    if isinstance(op, PutApimProduct | PutApimPolicy | UnpublishApimProduct | SetApimLink):
        if apim is None:
            raise CatalogServiceError("no APIM client was given for an APIM action")
        return _run_apim(op, apim)
    if stripe is None:
        raise CatalogServiceError("no Stripe client was given for a Stripe action")
    if isinstance(op, CreateStripeProduct):
        stripe.create_product(op.spec, idempotency_key(op))
        return op.spec.stripe_id
    if isinstance(op, UpdateStripeProduct):
        stripe.update_product(op)
        return op.stripe_id
    if isinstance(op, CreateMeter):
        meter_ids[op.spec.event_name] = stripe.create_meter(op.spec, idempotency_key(op))
        return meter_ids[op.spec.event_name]
    if isinstance(op, UpdateMeter):
        stripe.update_meter(op.meter_id, op.display_name)
        return op.meter_id
    if isinstance(op, SetMeterActive):
        stripe.set_meter_active(op.meter_id, op.active)
        return op.meter_id
    if isinstance(op, PutPortalConfig):
        return stripe.put_portal_config(op, idempotency_key(op))
    if isinstance(op, CreatePrice):
        event = op.spec.terms.meter_event_name
        meter_id = meter_ids.get(event) if event else None
        if event and meter_id is None:
            raise CatalogServiceError(f"meter {event} does not exist yet; run apply again")
        return stripe.create_price(op.spec, meter_id, op.replaces is not None, idempotency_key(op))
    stripe.update_price(op)
    return op.price_id


def _run_apim(op: PutApimProduct | PutApimPolicy | UnpublishApimProduct | SetApimLink, apim: ApimCatalogWriter) -> str:
    if isinstance(op, SetApimLink):
        apim.set_link(op)
        return f"{op.product_id} -> {op.kind} {op.target_id}"
    if isinstance(op, PutApimProduct):
        apim.put_product(op.spec, op.exists)
        return op.spec.product_id
    if isinstance(op, PutApimPolicy):
        apim.put_policy(op.product_id, op.policy_xml, op.exists)
        return op.product_id
    apim.unpublish_product(op.product_id)
    return op.product_id
