"""The catalog's Stripe adapter: reads products, meters and prices; makes the plan's changes.

Every call goes through the app's one Stripe retry policy (`billing.adapters.stripe_client.with_retries`:
the SDK's network retries, then 429 and 5xx under the process's Stripe budget), with the same
idempotency key on each try.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import stripe

from billing import catalog_names as names
from billing.adapters.stripe_client import with_retries
from billing.catalog.desired import METER_AGGREGATION, MeterSpec, PriceSpec, PriceTerms, StripeProductSpec, decimal_text
from billing.catalog.plan import PutPortalConfig, UpdatePrice, UpdateStripeProduct
from billing.catalog.state import (
    CatalogServiceError,
    MeterState,
    PortalConfigState,
    PriceState,
    StripeProductState,
    StripeState,
)
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient

T = TypeVar("T")


class StripeCatalog:
    """Implements billing.catalog.apply.StripeCatalogWriter and reads the current state."""

    def __init__(self, client: stripe.StripeClient, budget: TokenBucket) -> None:
        self.client = client
        self.budget = budget

    # ---- calls ---------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return with_retries(fn, self.budget)
        except (Throttled, Transient) as exc:
            cause = exc.__cause__
            reason = _message(cause) if isinstance(cause, stripe.StripeError) else str(exc)
            raise CatalogServiceError(f"stripe: {what}: {reason}") from None
        except stripe.StripeError as exc:
            raise CatalogServiceError(f"stripe: {what}: {_message(exc)}") from None

    def _all(self, what: str, first_page: Callable[[], Any]) -> list[dict[str, Any]]:
        def fetch() -> list[dict[str, Any]]:
            return [item.to_dict() for item in first_page().auto_paging_iter()]

        return self._call(what, fetch)

    # ---- reading -------------------------------------------------------------------------------
    def read_state(self) -> StripeState:
        v1 = self.client.v1
        products = {
            p["id"]: _product(p)
            for p in self._all("listing products", lambda: v1.products.list({"limit": 100}))
            if (p.get("metadata") or {}).get(names.PRODUCT_METADATA_KEY)
        }
        raw_meters = self._all("listing meters", lambda: v1.billing.meters.list({"limit": 100}))
        meters = tuple(_meter(m) for m in raw_meters if str(m.get("event_name", "")).startswith("apim_calls_"))
        events = {m.id: m.event_name for m in meters}
        prices: list[PriceState] = []
        for product_id in sorted(products):
            listed = self._all(f"listing prices of {product_id}", _lister(v1.prices.list, {"product": product_id}))
            prices += [_price(p, events) for p in listed]
        prices.sort(key=lambda p: (p.created, p.id))
        configs = self._all(
            "listing customer portal configurations",
            lambda: v1.billing_portal.configurations.list({"limit": 100, "active": True}),
        )
        ours = [c for c in configs if (c.get("metadata") or {}).get(names.PORTAL_CONFIG_METADATA_KEY) == "portal"]
        return StripeState(products, meters, tuple(prices), _portal(ours[0]) if ours else None)

    # ---- writing -------------------------------------------------------------------------------
    def create_product(self, spec: StripeProductSpec, idempotency_key: str) -> None:
        params: Any = {
            "id": spec.stripe_id,
            "name": spec.name,
            "description": spec.description,
            "metadata": spec.metadata,
        }
        try:
            self._call(
                f"creating product {spec.stripe_id}",
                lambda: self.client.v1.products.create(params, {"idempotency_key": idempotency_key}),
            )
        except CatalogServiceError:
            # Made by an earlier run whose answer was lost: the next plan updates it if needed.
            if self._exists(spec.stripe_id):
                return
            raise

    def _exists(self, stripe_id: str) -> bool:
        try:
            self.client.v1.products.retrieve(stripe_id)
        except stripe.StripeError:
            return False
        return True

    def update_product(self, op: UpdateStripeProduct) -> None:
        params: dict[str, Any] = {}
        if op.name is not None:
            params["name"] = op.name
        if op.description is not None:
            params["description"] = op.description
        if op.active is not None:
            params["active"] = op.active
        if op.metadata:
            params["metadata"] = dict(op.metadata)
        self._call(f"updating product {op.stripe_id}", lambda: self.client.v1.products.update(op.stripe_id, params))  # type: ignore[arg-type]

    def create_meter(self, spec: MeterSpec, idempotency_key: str) -> str:
        params: Any = {
            "display_name": spec.display_name,
            "event_name": spec.event_name,
            "default_aggregation": {"formula": METER_AGGREGATION},
            "customer_mapping": {"event_payload_key": names.METER_CUSTOMER_KEY, "type": "by_id"},
            "value_settings": {"event_payload_key": names.METER_VALUE_KEY},
        }
        meter = self._call(
            f"creating meter {spec.event_name}",
            lambda: self.client.v1.billing.meters.create(params, {"idempotency_key": idempotency_key}),
        )
        return str(meter.id)

    def update_meter(self, meter_id: str, display_name: str) -> None:
        self._call(
            f"renaming meter {meter_id}",
            lambda: self.client.v1.billing.meters.update(meter_id, {"display_name": display_name}),
        )

    def set_meter_active(self, meter_id: str, active: bool) -> None:
        meters = self.client.v1.billing.meters
        if active:
            self._call(f"reactivating meter {meter_id}", lambda: meters.reactivate(meter_id))
        else:
            self._call(f"deactivating meter {meter_id}", lambda: meters.deactivate(meter_id))

    def create_price(self, spec: PriceSpec, meter_id: str | None, transfer: bool, idempotency_key: str) -> str:
        t = spec.terms
        recurring: dict[str, Any] = {"interval": t.interval, "usage_type": t.usage_type}
        if meter_id is not None:
            recurring["meter"] = meter_id
        params: dict[str, Any] = {
            "product": t.product,
            "currency": t.currency,
            "recurring": recurring,
            "billing_scheme": "per_unit",
            "lookup_key": spec.lookup_key,
            "metadata": spec.metadata,
            "nickname": spec.nickname,
        }
        if t.unit_amount_decimal == t.unit_amount_decimal.to_integral_value():
            params["unit_amount"] = int(t.unit_amount_decimal)
        else:
            params["unit_amount_decimal"] = decimal_text(t.unit_amount_decimal)
        if t.divide_by is not None:
            params["transform_quantity"] = {"divide_by": t.divide_by, "round": "up"}
        if transfer:
            params["transfer_lookup_key"] = True
        price = self._call(
            f"creating price {spec.lookup_key}",
            lambda: self.client.v1.prices.create(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
        )
        return str(price.id)

    def update_price(self, op: UpdatePrice) -> None:
        params: dict[str, Any] = {}
        if op.active is not None:
            params["active"] = op.active
        if op.metadata:
            params["metadata"] = dict(op.metadata)
        self._call(f"updating price {op.price_id}", lambda: self.client.v1.prices.update(op.price_id, params))  # type: ignore[arg-type]

    # ---- subscriptions on old prices (migrate-prices) ------------------------------------------
    def put_portal_config(self, op: PutPortalConfig, idempotency_key: str) -> str:
        params: Any = {
            "business_profile": {"headline": op.spec.headline},
            "features": op.spec.features(),
            "metadata": op.spec.metadata,
        }
        configs = self.client.v1.billing_portal.configurations
        if op.config_id is None:
            made = self._call(
                "creating the customer portal configuration",
                lambda: configs.create(params, {"idempotency_key": idempotency_key}),
            )
            return str(made.id)
        config_id = op.config_id
        self._call(f"updating customer portal configuration {config_id}", lambda: configs.update(config_id, params))
        return config_id

    def subscriptions_on(self, price_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Live subscriptions with an item on one of `price_ids` (each listed once)."""
        found: dict[str, dict[str, Any]] = {}
        for price_id in price_ids:
            lister = _lister(
                self.client.v1.subscriptions.list, {"price": price_id, "status": "all", "expand": ["data.test_clock"]}
            )
            for sub in self._all(f"listing subscriptions on {price_id}", lister):
                if sub.get("status") not in ("canceled", "incomplete_expired"):
                    found[sub["id"]] = sub
        return list(found.values())

    def swap_item_price(self, item_id: str, price_id: str, idempotency_key: str) -> None:
        self._call(
            f"moving subscription item {item_id} to {price_id}",
            lambda: self.client.v1.subscription_items.update(
                item_id,
                {"price": price_id, "proration_behavior": "create_prorations"},
                {"idempotency_key": idempotency_key},
            ),
        )


def _lister(list_fn: Callable[[Any], Any], params: dict[str, Any]) -> Callable[[], Any]:
    return lambda: list_fn({**params, "limit": 100})


def _message(exc: stripe.StripeError) -> str:
    # Stripe's own messages never carry the key (it masks it); keep the status for diagnosis.
    text = exc.user_message or type(exc).__name__
    status = f" (HTTP {exc.http_status})" if exc.http_status else ""
    return f"{text}{status}"


def _portal(c: dict[str, Any]) -> PortalConfigState:
    """The parts PortalConfigSpec sets, in its shape (Stripe's objects carry more fields)."""
    f = c.get("features") or {}
    cancel = f.get("subscription_cancel") or {}
    features = {
        "invoice_history": {"enabled": bool((f.get("invoice_history") or {}).get("enabled"))},
        "payment_method_update": {"enabled": bool((f.get("payment_method_update") or {}).get("enabled"))},
        "subscription_cancel": {
            "enabled": bool(cancel.get("enabled")),
            "mode": cancel.get("mode"),
            "proration_behavior": cancel.get("proration_behavior"),
        },
        "subscription_update": {"enabled": bool((f.get("subscription_update") or {}).get("enabled"))},
        "customer_update": {"enabled": bool((f.get("customer_update") or {}).get("enabled"))},
    }
    return PortalConfigState(str(c["id"]), (c.get("business_profile") or {}).get("headline"), features)


def _product(p: dict[str, Any]) -> StripeProductState:
    metadata = dict(p.get("metadata") or {})
    return StripeProductState(p["id"], p.get("name") or "", p.get("description"), bool(p.get("active")), metadata)


def _meter(m: dict[str, Any]) -> MeterState:
    return MeterState(
        id=m["id"],
        event_name=m.get("event_name") or "",
        display_name=m.get("display_name") or "",
        active=m.get("status") == "active",
        aggregation=(m.get("default_aggregation") or {}).get("formula") or "",
        customer_key=(m.get("customer_mapping") or {}).get("event_payload_key") or "",
        value_key=(m.get("value_settings") or {}).get("event_payload_key") or "",
    )


def _price(p: dict[str, Any], meter_events: dict[str, str]) -> PriceState:
    return PriceState(
        id=p["id"],
        lookup_key=p.get("lookup_key"),
        active=bool(p.get("active")),
        metadata=dict(p.get("metadata") or {}),
        terms=_terms(p, meter_events),
        created=int(p.get("created") or 0),
    )


def _terms(p: dict[str, Any], meter_events: dict[str, str]) -> PriceTerms | None:
    recurring = p.get("recurring") or {}
    if p.get("billing_scheme") != "per_unit" or not recurring or recurring.get("interval_count", 1) != 1:
        return None
    raw = p.get("unit_amount_decimal")
    if raw is None:
        raw = p.get("unit_amount")
    try:
        amount = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
    transform = p.get("transform_quantity") or {}
    if transform and transform.get("round") != "up":
        return None
    meter = recurring.get("meter")
    return PriceTerms(
        product=p.get("product") or "",
        currency=p.get("currency") or "",
        interval=recurring.get("interval") or "",
        usage_type=recurring.get("usage_type") or "",
        unit_amount_decimal=amount,
        divide_by=transform.get("divide_by") if transform else None,
        meter_event_name=meter_events.get(meter, meter) if meter else None,
    )
