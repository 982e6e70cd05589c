"""Reading the Stripe objects the access logic needs out of their JSON (pure; plain dicts in).

In the pinned API version, billing periods live on subscription items and an invoice names its
subscription under `parent.subscription_details.subscription`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billing.access.decisions import StripeState
from billing.catalog_names import SUB_META_ACCESS_ENDED


class MalformedObject(ValueError):
    """A Stripe object lacks a field the app relies on."""


@dataclass(frozen=True)
class SubscriptionSnapshot:
    id: str
    customer_id: str
    state: StripeState
    metadata: Mapping[str, str]
    product_ids: frozenset[str]  # Stripe product ids of the subscription's prices
    usage_item_id: str  # the metered item ("" when none)
    period_start: int
    period_end: int
    canceled_at: int
    billing_threshold: int | None = None  # billing_thresholds.amount_gte (minor units), if set
    trial_end: int = 0  # the end of its free trial (unix seconds); 0 for a subscription without one


def _id_of(value: Any) -> str:
    """A reference that may be an id or an expanded object."""
    if isinstance(value, Mapping):
        return str(value.get("id") or "")
    return str(value or "")


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def subscription_snapshot(
    sub: Mapping[str, Any], latest_invoice: Mapping[str, Any] | None = None
) -> SubscriptionSnapshot:
    """The snapshot of a subscription; `latest_invoice` when it was not expanded in `sub`."""
    sub_id, status = sub.get("id"), sub.get("status")
    if not isinstance(sub_id, str) or not isinstance(status, str):
        raise MalformedObject("subscription without id or status")
    invoice = latest_invoice
    if invoice is None and isinstance(sub.get("latest_invoice"), Mapping):
        invoice = sub["latest_invoice"]
    items = [i for i in ((sub.get("items") or {}).get("data") or []) if isinstance(i, Mapping)]
    products: set[str] = set()
    usage_item = ""
    for item in items:
        price = item.get("price") or {}
        products.add(_id_of(price.get("product")))
        if (price.get("recurring") or {}).get("usage_type") == "metered" and not usage_item:
            usage_item = str(item.get("id") or "")
    # The metered item's period is the one usage is billed for; otherwise any item's (all share it).
    period_item = next((i for i in items if i.get("id") == usage_item), items[0] if items else {})
    metadata = {str(k): str(v) for k, v in (sub.get("metadata") or {}).items() if v is not None}
    ended_at = _int(sub.get("ended_at"))
    state = StripeState(
        status=status,
        latest_invoice_status=str(invoice.get("status")) if invoice and invoice.get("status") else None,
        latest_invoice_attempted=bool(invoice.get("attempted")) if invoice else False,
        ended_at=ended_at,
        access_ended=bool(metadata.get(SUB_META_ACCESS_ENDED)),
    )
    return SubscriptionSnapshot(
        id=sub_id,
        customer_id=_id_of(sub.get("customer")),
        state=state,
        metadata=metadata,
        product_ids=frozenset(p for p in products if p),
        usage_item_id=usage_item,
        period_start=_int(period_item.get("current_period_start")),
        period_end=_int(period_item.get("current_period_end")),
        canceled_at=ended_at or (_int(sub.get("canceled_at")) if status == "canceled" else 0),
        billing_threshold=_int((sub.get("billing_thresholds") or {}).get("amount_gte")) or None,
        trial_end=_int(sub.get("trial_end")),
    )


def latest_invoice_id(sub: Mapping[str, Any]) -> str:
    return _id_of(sub.get("latest_invoice"))


def invoice_subscription_id(invoice: Mapping[str, Any]) -> str:
    """The subscription an invoice bills, or "" for a one-off invoice."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
    if isinstance(details, Mapping) and details.get("subscription"):
        return _id_of(details["subscription"])
    return _id_of(invoice.get("subscription"))  # older API versions
