"""`billing.portal.plan_change.PlanChangesPort` over the Stripe SDK, the APIM client and the usage queue."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import stripe
from azure.mgmt.apimanagement.models import SubscriptionUpdateParameters
from azure.storage.queue import QueueClient

from billing import catalog_names as names
from billing.adapters.apim_client import ApimService
from billing.portal.plan_change import ChangeConflict, PaymentFailed, PlanItem, StripePlan
from billing.usage.batches import PlanChangeRequest, plan_change_message
from billing.usage.timing import LAG_SETTING, lag_seconds_of

log = logging.getLogger(__name__)


class PlanChanges:
    def __init__(
        self,
        client: stripe.StripeClient,
        apim: ApimService,
        usage_queue: QueueClient,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._c = client.v1
        self._apim = apim
        self._queue = usage_queue
        self._env = env

    def current(self, subscription_id: str) -> StripePlan | None:
        try:
            sub = self._c.subscriptions.retrieve(
                subscription_id, params={"expand": ["test_clock", "schedule", "items.data.price", "customer"]}
            )
        except stripe.InvalidRequestError:
            return None
        raw: dict[str, Any] = sub.to_dict()
        items = []
        for item in (raw.get("items") or {}).get("data") or []:
            price = item.get("price") or {}
            items.append(
                PlanItem(
                    str(item["id"]),
                    str(price.get("id")),
                    str(price.get("lookup_key") or ""),
                    (price.get("recurring") or {}).get("usage_type") == "metered",
                    item.get("quantity"),
                )
            )
        if not items:
            return None
        clock = raw.get("test_clock")
        schedule = raw.get("schedule") if isinstance(raw.get("schedule"), dict) else None
        scheduled_product = scheduled_at = None
        if schedule is not None and schedule.get("status") == "active":
            later = [ph for ph in schedule.get("phases") or [] if ph.get("start_date", 0) > items_start(raw)]
            if later:
                scheduled_product = (later[0].get("metadata") or {}).get(names.SUB_META_PRODUCT)
                scheduled_at = int(later[0]["start_date"])
        first = raw["items"]["data"][0]
        return StripePlan(
            subscription_id=str(raw["id"]),
            status=str(raw.get("status")),
            customer_id=_id(raw.get("customer")),
            metadata={str(k): str(v) for k, v in (raw.get("metadata") or {}).items()},
            items=tuple(items),
            period_start=int(first["current_period_start"]),
            period_end=int(first["current_period_end"]),
            clock_now=int(clock["frozen_time"]) if isinstance(clock, dict) else None,
            schedule_id=str(schedule["id"]) if schedule is not None and schedule.get("status") == "active" else None,
            scheduled_product=scheduled_product,
            scheduled_at=scheduled_at,
            cancel_at_period_end=bool(raw.get("cancel_at_period_end")),
            payment_method=_payment_method(raw),
        )

    def upgrade(
        self,
        subscription_id: str,
        items: Sequence[Mapping[str, object]],
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> None:
        params: dict[str, Any] = {
            "items": [dict(i) for i in items],
            "metadata": dict(metadata),
            "proration_behavior": "always_invoice",
            "payment_behavior": "error_if_incomplete",
        }
        try:
            self._c.subscriptions.update(
                subscription_id,
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            raise PaymentFailed(str(exc.user_message or "the card was declined")) from None
        except stripe.IdempotencyError:
            raise ChangeConflict("another change of this subscription was made from this part of the period") from None
        # A downgrade confirmed in another tab at the same moment may have put a schedule on the subscription
        # (its checks read it before this upgrade): its next phase would take the pre-upgrade items and
        # metadata at the period end, and leave APIM on the product paid for now. The upgrade, paid, wins;
        # the downgrade's own check after its write (`schedule_downgrade`) refuses it too.
        after = self._c.subscriptions.retrieve(subscription_id)
        if after.schedule:
            log.warning("subscription %s: a schedule made while it was upgraded is released", subscription_id)
            self.release_schedule(_id(after.schedule))

    def schedule_downgrade(
        self, plan: StripePlan, next_items: Sequence[tuple[str, int | None]], metadata: Mapping[str, str]
    ) -> None:
        try:
            schedule = self._c.subscription_schedules.create(params={"from_subscription": plan.subscription_id})
        except stripe.InvalidRequestError:
            raise ChangeConflict("the subscription has a schedule already") from None
        phase = schedule.phases[0]
        current = [_item(i.price_id, None if i.metered else (i.quantity or 1)) for i in plan.items]
        try:
            self._c.subscription_schedules.update(
                schedule.id,
                params={  # type: ignore[arg-type]
                    "end_behavior": "release",
                    "phases": [
                        {"items": current, "start_date": phase.start_date, "end_date": phase.end_date},
                        {
                            "items": [_item(price, quantity) for price, quantity in next_items],
                            "duration": {"interval": "month", "interval_count": 1},
                            "metadata": dict(metadata),
                        },
                    ],
                },
            )
        except Exception:
            self._c.subscription_schedules.release(schedule.id)  # no half-made schedule is left behind
            if self._changed_meanwhile(plan, schedule.id):
                raise ChangeConflict("the subscription changed plan while the downgrade was being planned") from None
            raise
        # Another tab's upgrade may have happened between the portal's read and this schedule: its next
        # phase would then undo a paid upgrade at the period end with metadata that no longer matches APIM.
        if self._changed_meanwhile(plan, schedule.id):
            self.release_schedule(schedule.id)
            raise ChangeConflict("the subscription changed plan while the downgrade was being planned")

    def _changed_meanwhile(self, plan: StripePlan, schedule_id: str) -> bool:
        after = self._c.subscriptions.retrieve(plan.subscription_id)
        now_on = after.metadata.to_dict().get(names.SUB_META_PRODUCT) if after.metadata is not None else None
        return now_on != plan.metadata.get(names.SUB_META_PRODUCT) or _id(after.schedule) not in ("", schedule_id)

    def release_schedule(self, schedule_id: str) -> None:
        try:
            self._c.subscription_schedules.release(schedule_id)
        except stripe.InvalidRequestError:
            current = self._c.subscription_schedules.retrieve(schedule_id)
            if current.status in ("active", "not_started"):
                raise
            # released, completed or cancelled meanwhile: nothing left to undo

    def end_at_period_end(self, subscription_id: str, next_product: str) -> None:
        self._c.subscriptions.update(
            subscription_id,
            params={"cancel_at_period_end": True, "metadata": {names.SUB_META_NEXT_PRODUCT: next_product}},
        )

    def keep_on(self, subscription_id: str) -> None:
        self._c.subscriptions.update(
            subscription_id, params={"cancel_at_period_end": False, "metadata": {names.SUB_META_NEXT_PRODUCT: ""}}
        )

    def move_scope(self, subscription_id: str, product_id: str) -> None:
        # SubscriptionUpdateParameters.scope (REST 2024-05-01): "Scope like /products/{productId}"; the keys stay.
        params = SubscriptionUpdateParameters(scope=f"/products/{product_id}")
        self._apim.client.subscription.update(
            self._apim.resource_group, self._apim.service_name, subscription_id, "*", params
        )

    def report_old_usage_later(self, request: PlanChangeRequest) -> None:
        delay = lag_seconds_of(config_get(LAG_SETTING, self._env))
        self._queue.send_message(plan_change_message(request), visibility_timeout=delay, timeout=5)


def _id(value: object) -> str:
    return str(value.get("id") or "") if isinstance(value, Mapping) else str(value or "")


def _payment_method(raw: Mapping[str, Any]) -> str:
    """The payment method Stripe charges the subscription's invoices to: its own default, else its customer's
    (`invoice_settings.default_payment_method`)."""
    own = _id(raw.get("default_payment_method"))
    customer = raw.get("customer")
    if own or not isinstance(customer, Mapping):
        return own
    return _id((customer.get("invoice_settings") or {}).get("default_payment_method"))


def items_start(raw: Mapping[str, Any]) -> int:
    data = (raw.get("items") or {}).get("data") or []
    return int(data[0]["current_period_start"]) if data else 0


def _item(price: str, quantity: int | None) -> dict[str, Any]:
    return {"price": price} if quantity is None else {"price": price, "quantity": quantity}


def config_get(name: str, env: Mapping[str, str] | None) -> str:
    from billing import config  # noqa: PLC0415 - as the final invoice queue reads it, at each change

    return config.get(name, env)
