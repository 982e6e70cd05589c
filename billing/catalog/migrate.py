"""Moving existing subscriptions from replaced prices to the current ones (explicit, separate).

A price change leaves subscriptions on their old price; `catalog migrate-prices` plans (and with
`--apply` makes) one price swap per subscription item. Every call up to the move is billed at the
old price, every later one at the new: subscriptions are in Stripe's flexible billing mode, which
"bills for usage based on the price at the time you report it", so a metered item's usage so far
is first reported (the closing report up to the move), then the item is swapped with
`create_prorations`, which puts that usage, at the old price, on the next invoice ("we create an
invoice item that bills for previously reported metered usage"), and prorates a flat fee. Stripe's
`proration_behavior="none"` would instead drop the period's usage ("remove a metered price
without billing for it"). A schedule at the period end would also bill correctly but leave the old
price in force until then, and the move would wait a month.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from billing import catalog_names as names
from billing.catalog.desired import DesiredCatalog
from billing.catalog.state import StripeState


@dataclass(frozen=True)
class PriceMove:
    subscription_id: str
    item_id: str
    from_price: str
    to_price: str
    lookup_key: str
    metered: bool = False
    period_start: int = 0  # the item's current period (its usage so far is reported before the move)
    period_end: int = 0
    stripe_now: int = 0  # Stripe's present for the subscription (a test clock's time; 0: the wall clock)

    def line(self) -> str:
        where = f"{self.subscription_id} item {self.item_id}"
        return f"~ move {where}: {self.from_price} -> {self.to_price} ({self.lookup_key})"


def outdated_prices(desired: DesiredCatalog, stripe: StripeState) -> dict[str, tuple[str, str]]:
    """Old price id -> (current price id, lookup key), for every desired price with a predecessor."""
    holders = {p.lookup_key: p for p in stripe.prices if p.lookup_key}
    outdated: dict[str, tuple[str, str]] = {}
    for spec in desired.prices:
        current = holders.get(spec.lookup_key)
        if current is None or current.terms != spec.terms:
            continue  # catalog apply has not run for this price yet: nothing to move to
        for price in stripe.prices:
            same_role = (
                price.metadata.get(names.PRODUCT_METADATA_KEY) == spec.product_id
                and price.metadata.get(names.PRICE_ROLE_METADATA_KEY) == spec.role.value
            )
            if same_role and price.id != current.id:
                outdated[price.id] = (current.id, spec.lookup_key)
    return outdated


def plan_moves(outdated: Mapping[str, tuple[str, str]], subscriptions: Iterable[Mapping[str, Any]]) -> list[PriceMove]:
    moves: list[PriceMove] = []
    for sub in subscriptions:
        for item in (sub.get("items") or {}).get("data") or []:
            price = item.get("price") or {}
            price_id = str(price.get("id") if isinstance(price, Mapping) else price)
            if price_id in outdated:
                to_price, key = outdated[price_id]
                metered = ((price.get("recurring") or {}) if isinstance(price, Mapping) else {}).get(
                    "usage_type"
                ) == "metered"
                clock = sub.get("test_clock")
                moves.append(
                    PriceMove(
                        str(sub["id"]),
                        str(item["id"]),
                        str(price_id),
                        to_price,
                        key,
                        metered=metered,
                        period_start=int(item.get("current_period_start") or 0),
                        period_end=int(item.get("current_period_end") or 0),
                        stripe_now=int(clock.get("frozen_time") or 0) if isinstance(clock, Mapping) else 0,
                    )
                )
    return sorted(moves, key=lambda m: (m.subscription_id, m.item_id))
