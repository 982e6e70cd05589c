"""Moving existing subscriptions from replaced prices to the current ones (explicit, separate).

A price change leaves subscriptions on their old price; `catalog migrate-prices` plans (and with
`--apply` makes) one price swap per subscription item, without proration: the new price applies
from the next invoice on.
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
                moves.append(PriceMove(str(sub["id"]), str(item["id"]), str(price_id), to_price, key))
    return sorted(moves, key=lambda m: (m.subscription_id, m.item_id))
