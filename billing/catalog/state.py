"""What Stripe and APIM hold now, as read by the adapters: plain data the planner compares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from billing.catalog.desired import PriceTerms
from billing.policy import DEFAULT_TIER


class CatalogServiceError(Exception):
    """A service refused or could not be reached; the message is safe to show (no secrets)."""


@dataclass(frozen=True)
class StripeProductState:
    id: str
    name: str
    description: str | None
    active: bool
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class MeterState:
    id: str
    event_name: str
    display_name: str
    active: bool
    aggregation: str
    customer_key: str
    value_key: str


@dataclass(frozen=True)
class PriceState:
    id: str
    lookup_key: str | None
    active: bool
    metadata: Mapping[str, str]
    terms: PriceTerms | None  # None: a shape this catalog never makes (e.g. tiered)
    created: int = 0


@dataclass(frozen=True)
class PortalConfigState:
    id: str
    headline: str | None
    features: Mapping[str, object]  # the parts of Stripe's `features` that PortalConfigSpec sets


@dataclass(frozen=True)
class StripeState:
    products: Mapping[str, StripeProductState] = field(default_factory=dict)  # by Stripe product id
    meters: tuple[MeterState, ...] = ()
    prices: tuple[PriceState, ...] = ()  # prices of the products above
    portal: PortalConfigState | None = None  # the customer portal configuration the catalog made


@dataclass(frozen=True)
class ApimProductState:
    id: str
    display_name: str
    description: str | None
    subscription_required: bool | None
    approval_required: bool | None
    subscriptions_limit: int | None
    state: str | None
    policy_xml: str | None  # None: the product has no policy
    subscription_count: int | None = None  # only read for products not in the models file
    # Only read for products in the models file: the APIs and groups linked to it in APIM, and those
    # of them that the catalog linked itself (the only links it may remove).
    apis: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    catalog_apis: frozenset[str] = frozenset()
    catalog_groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ApimState:
    products: Mapping[str, ApimProductState] = field(default_factory=dict)
    tier: str = DEFAULT_TIER  # the instance's SKU name (Developer, Basic, ..., StandardV2)
    api_ids: frozenset[str] = frozenset()  # the APIs the instance has
    group_ids: frozenset[str] = frozenset()  # the groups the instance has
