"""The plan: a pure diff of the desired catalog against what Stripe and APIM hold.

Actions come out in an order that a rerun can always finish: Stripe products, then meters, then
prices (new ones before the old ones are archived), then removals; APIM products before their
policies. Every create is found again by a stable name (product id, meter event name, price
lookup key), so an apply that stopped part-way is completed by the next plan.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from billing import catalog_names as names
from billing.catalog.desired import (
    METER_AGGREGATION,
    ApimProductSpec,
    DesiredCatalog,
    MeterSpec,
    PortalConfigSpec,
    PriceSpec,
    StripeProductSpec,
    decimal_text,
)
from billing.catalog.state import (
    ApimProductState,
    ApimState,
    MeterState,
    PortalConfigState,
    PriceState,
    StripeState,
)


class Service(StrEnum):
    STRIPE = "stripe"
    APIM = "apim"


class Change(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    ARCHIVE = "archive"
    REMOVE = "remove"  # a link the catalog made and the models file no longer names


# ---- operations: what the executor does, with everything it needs ------------------------------
@dataclass(frozen=True)
class CreateStripeProduct:
    spec: StripeProductSpec


@dataclass(frozen=True)
class UpdateStripeProduct:
    stripe_id: str
    name: str | None = None
    description: str | None = None
    active: bool | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CreateMeter:
    spec: MeterSpec


@dataclass(frozen=True)
class UpdateMeter:
    meter_id: str
    display_name: str


@dataclass(frozen=True)
class SetMeterActive:
    meter_id: str
    event_name: str
    active: bool


@dataclass(frozen=True)
class CreatePrice:
    spec: PriceSpec
    replaces: str | None  # the price that holds the lookup key now (archived by a later action)


@dataclass(frozen=True)
class UpdatePrice:
    price_id: str
    active: bool | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PutPortalConfig:
    """Create (config_id None) or update the customer portal configuration."""

    spec: PortalConfigSpec
    config_id: str | None


@dataclass(frozen=True)
class PutApimProduct:
    spec: ApimProductSpec
    exists: bool


@dataclass(frozen=True)
class PutApimPolicy:
    product_id: str
    policy_xml: str
    exists: bool


@dataclass(frozen=True)
class UnpublishApimProduct:
    product_id: str


@dataclass(frozen=True)
class SetApimLink:
    """Link (or unlink) an API or a group to a product: what its keys may call, who sees it."""

    product_id: str
    kind: str  # "api" or "group"
    target_id: str
    linked: bool  # True: add the link; False: remove it


Operation = (
    CreateStripeProduct
    | UpdateStripeProduct
    | CreateMeter
    | UpdateMeter
    | SetMeterActive
    | CreatePrice
    | UpdatePrice
    | PutPortalConfig
    | PutApimProduct
    | PutApimPolicy
    | UnpublishApimProduct
    | SetApimLink
)


@dataclass(frozen=True)
class Action:
    service: Service
    change: Change
    kind: str  # "product", "meter", "price", "policy"
    target: str  # the stable name, e.g. "apim-standard" or lookup key "standard-usage"
    details: tuple[str, ...]  # one line per field that changes
    op: Operation

    def headline(self) -> str:
        return f"{self.change.value} {self.service.value} {self.kind} {self.target}"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    notices: tuple[str, ...] = ()  # things left alone on purpose, said out loud
    problems: tuple[str, ...] = ()  # states apply cannot fix; apply refuses while any exist
    meter_ids: tuple[tuple[str, str], ...] = ()  # event name -> id of meters that exist already

    def for_service(self, service: Service) -> list[Action]:
        return [a for a in self.actions if a.service is service]

    @property
    def empty(self) -> bool:
        return not self.actions


@dataclass
class _Builder:
    actions: list[Action] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(  # noqa: PLR0917
        self,
        service: Service,
        change: Change,
        kind: str,
        target: str,
        details: Iterable[str],
        op: Operation,
    ) -> None:
        self.actions.append(Action(service, change, kind, target, tuple(details), op))


def make_plan(desired: DesiredCatalog, stripe: StripeState | None, apim: ApimState | None) -> Plan:
    """The actions that make Stripe (if given) and APIM (if given) match `desired`."""
    b = _Builder()
    meter_ids: dict[str, str] = {}
    if stripe is not None:
        meter_ids = _plan_stripe(b, desired, stripe)
    if apim is not None:
        _plan_apim(b, desired, apim, _catalog_made_product_ids(stripe))
    return Plan(tuple(b.actions), tuple(b.notices), tuple(b.problems), tuple(sorted(meter_ids.items())))


# ---- Stripe ------------------------------------------------------------------------------------
def _ours(metadata: dict[str, str] | object) -> str | None:
    if isinstance(metadata, dict):
        value = metadata.get(names.PRODUCT_METADATA_KEY)
        return value if isinstance(value, str) else None
    return None


def _plan_stripe(b: _Builder, desired: DesiredCatalog, stripe: StripeState) -> dict[str, str]:
    wanted_products = {s.stripe_id for s in desired.stripe_products}
    for spec in desired.stripe_products:
        _plan_stripe_product(b, spec, stripe)

    meters = _meters_by_event(stripe.meters)
    meter_ids = {event: m.id for event, m in meters.items()}
    for meter_spec in desired.meters:
        _plan_meter(b, meter_spec, meters.get(meter_spec.event_name))

    keepers: set[str] = set()
    holders = {p.lookup_key: p for p in stripe.prices if p.lookup_key}
    for price_spec in desired.prices:
        keeper = _plan_price(b, price_spec, holders.get(price_spec.lookup_key))
        if keeper:
            keepers.add(keeper)

    # Every other active price on our products is stale: replaced, or its product or role went.
    for price in stripe.prices:
        if price.active and price.id not in keepers:
            why = f"lookup key {price.lookup_key}" if price.lookup_key else "no lookup key (replaced)"
            b.add(
                Service.STRIPE,
                Change.ARCHIVE,
                "price",
                price.id,
                [f"active: true -> false ({why})"],
                UpdatePrice(price.id, active=False),
            )

    wanted_meters = {m.event_name for m in desired.meters}
    for event, meter in meters.items():
        if meter.active and event.startswith(names.meter_event_name("")) and event not in wanted_meters:
            b.add(
                Service.STRIPE,
                Change.ARCHIVE,
                "meter",
                event,
                ["status: active -> inactive (meters cannot be deleted; usage stops being billed)"],
                SetMeterActive(meter.id, event, active=False),
            )

    for product in stripe.products.values():
        if product.id not in wanted_products and product.active and _ours(dict(product.metadata)):
            b.add(
                Service.STRIPE,
                Change.ARCHIVE,
                "product",
                product.id,
                ["active: true -> false"],
                UpdateStripeProduct(product.id, active=False),
            )
    _plan_portal(b, desired.portal, stripe.portal)
    return meter_ids


def _plan_portal(b: _Builder, spec: PortalConfigSpec, current: PortalConfigState | None) -> None:
    if current is None:
        b.add(
            Service.STRIPE,
            Change.CREATE,
            "portal",
            "customer portal",
            ["invoices and payment methods; cancel at period end; no plan switching"],
            PutPortalConfig(spec, None),
        )
        return
    wanted = spec.features()
    details = [
        f"{name}: {current.features.get(name)!r} -> {value!r}"
        for name, value in wanted.items()
        if current.features.get(name) != value
    ]
    if current.headline != spec.headline:
        details.append(f"headline: {current.headline!r} -> {spec.headline!r}")
    if details:
        b.add(Service.STRIPE, Change.UPDATE, "portal", current.id, details, PutPortalConfig(spec, current.id))


def _plan_stripe_product(b: _Builder, spec: StripeProductSpec, stripe: StripeState) -> None:
    current = stripe.products.get(spec.stripe_id)
    if current is None:
        b.add(
            Service.STRIPE,
            Change.CREATE,
            "product",
            spec.stripe_id,
            [f"name: {spec.name!r}", f"description: {spec.description!r}", f"metadata: {spec.metadata}"],
            CreateStripeProduct(spec),
        )
        return
    details: list[str] = []
    name = description = None
    active: bool | None = None
    if current.name != spec.name:
        name = spec.name
        details.append(f"name: {current.name!r} -> {spec.name!r}")
    if (current.description or "") != spec.description:
        description = spec.description
        details.append(f"description: {current.description!r} -> {spec.description!r}")
    if not current.active:
        active = True
        details.append("active: false -> true")
    metadata = tuple((k, v) for k, v in spec.metadata.items() if current.metadata.get(k) != v)
    if metadata:
        details.append(f"metadata: {dict(metadata)}")
    if details:
        b.add(
            Service.STRIPE,
            Change.UPDATE,
            "product",
            spec.stripe_id,
            details,
            UpdateStripeProduct(spec.stripe_id, name, description, active, metadata),
        )


def _meters_by_event(meters: Iterable[MeterState]) -> dict[str, MeterState]:
    """One meter per event name: the active one, else the newest inactive one (ids sort by age)."""
    chosen: dict[str, MeterState] = {}
    for meter in meters:
        best = chosen.get(meter.event_name)
        if best is None or (meter.active and not best.active):
            chosen[meter.event_name] = meter
    return chosen


def _plan_meter(b: _Builder, spec: MeterSpec, current: MeterState | None) -> None:
    if current is None:
        b.add(
            Service.STRIPE,
            Change.CREATE,
            "meter",
            spec.event_name,
            [
                f"display name: {spec.display_name!r}",
                f"aggregation: {METER_AGGREGATION}",
                f"payload: {names.METER_CUSTOMER_KEY}, {names.METER_VALUE_KEY}",
            ],
            CreateMeter(spec),
        )
        return
    fixed = (current.aggregation, current.customer_key, current.value_key)
    expected = (METER_AGGREGATION, names.METER_CUSTOMER_KEY, names.METER_VALUE_KEY)
    if fixed != expected:
        # Stripe cannot change these in place, and a meter cannot be deleted.
        b.problems.append(
            f"stripe meter {current.id} ({spec.event_name}) has aggregation/customer/value keys {fixed}, "
            f"expected {expected}; Stripe cannot change these: deactivate it in the Dashboard and run apply again"
        )
        return
    if not current.active:
        b.add(
            Service.STRIPE,
            Change.UPDATE,
            "meter",
            spec.event_name,
            ["status: inactive -> active"],
            SetMeterActive(current.id, spec.event_name, active=True),
        )
    if current.display_name != spec.display_name:
        b.add(
            Service.STRIPE,
            Change.UPDATE,
            "meter",
            spec.event_name,
            [f"display name: {current.display_name!r} -> {spec.display_name!r}"],
            UpdateMeter(current.id, spec.display_name),
        )


def describe_terms(spec: PriceSpec) -> list[str]:
    t = spec.terms
    lines = [f"{t.usage_type} {t.currency} per {t.interval}: unit amount {decimal_text(t.unit_amount_decimal)} (minor)"]
    if t.divide_by:
        lines.append(f"quantity divided by {t.divide_by:,}, rounded up")
    if t.meter_event_name:
        lines.append(f"meter: {t.meter_event_name}")
    return lines


def _plan_price(b: _Builder, spec: PriceSpec, holder: PriceState | None) -> str | None:
    """Plan the price behind `spec.lookup_key`; the id of the existing price that stays, if any."""
    if holder is None:
        b.add(Service.STRIPE, Change.CREATE, "price", spec.lookup_key, describe_terms(spec), CreatePrice(spec, None))
        return None
    if holder.terms != spec.terms:
        # Prices are immutable: a new one takes the lookup key, the old one is archived after.
        old = _terms_text(holder)
        details = [
            f"was {old} ({holder.id}); new price:",
            *describe_terms(spec),
            "existing subscriptions stay on the old price until `catalog migrate-prices --apply`",
        ]
        b.add(Service.STRIPE, Change.CREATE, "price", spec.lookup_key, details, CreatePrice(spec, holder.id))
        return None
    details = []
    active: bool | None = None
    if not holder.active:
        active = True
        details.append("active: false -> true")
    metadata = tuple((k, v) for k, v in spec.metadata.items() if holder.metadata.get(k) != v)
    if metadata:
        details.append(f"metadata: {dict(metadata)}")
    if details:
        b.add(
            Service.STRIPE, Change.UPDATE, "price", spec.lookup_key, details, UpdatePrice(holder.id, active, metadata)
        )
    return holder.id


def _terms_text(price: PriceState) -> str:
    t = price.terms
    if t is None:
        return "a price of a shape this catalog does not make"
    extra = f", /{t.divide_by:,} rounded up" if t.divide_by else ""
    return f"{t.usage_type} {t.currency} {decimal_text(t.unit_amount_decimal)} per {t.interval}{extra}"


# ---- APIM --------------------------------------------------------------------------------------
def normalised_xml(text: str) -> str:
    """Canonical form for comparing policies: whitespace between elements and comments ignored."""
    try:
        return ET.canonicalize(text, strip_text=True, with_comments=False)
    except ET.ParseError:
        return text.strip()


def _catalog_made_product_ids(stripe: StripeState | None) -> frozenset[str]:
    """Model ids the catalog once sold through Stripe: the only APIM products it may retire.

    Without Stripe's state (`--apim-only`) nothing can be shown to be ours, so nothing is retired.
    """
    if stripe is None:
        return frozenset()
    ids = (p.metadata.get(names.PRODUCT_METADATA_KEY) for p in stripe.products.values())
    return frozenset(i for i in ids if i)


def _plan_apim(b: _Builder, desired: DesiredCatalog, apim: ApimState, catalog_made: frozenset[str]) -> None:
    wanted = {s.product_id for s in desired.apim_products}
    policies: list[tuple[ApimProductSpec, bool, list[str]]] = []
    for spec in desired.apim_products:
        current = apim.products.get(spec.product_id)
        if current is None:
            b.add(
                Service.APIM,
                Change.CREATE,
                "product",
                spec.product_id,
                _apim_fields(spec),
                PutApimProduct(spec, exists=False),
            )
            policies.append((spec, False, ["set generated policy (rate limit, quota)"]))
            continue
        pairs = (
            ("display name", current.display_name, spec.display_name),
            ("description", current.description, spec.description),
            ("subscription required", current.subscription_required, spec.subscription_required),
            ("approval required", current.approval_required, spec.approval_required),
            ("subscriptions limit", current.subscriptions_limit, spec.subscriptions_limit),
            ("state", current.state, spec.state),
        )
        details = [f"{label}: {have!r} -> {want!r}" for label, have, want in pairs if have != want]
        if details:
            b.add(Service.APIM, Change.UPDATE, "product", spec.product_id, details, PutApimProduct(spec, exists=True))
        if current.policy_xml is None:
            policies.append((spec, False, ["set generated policy (none now)"]))
        elif normalised_xml(current.policy_xml) != normalised_xml(spec.policy_xml):
            policies.append((spec, True, ["replace policy with the generated one (limits differ)"]))
    for spec, exists, details in policies:
        change = Change.UPDATE if exists else Change.CREATE
        b.add(
            Service.APIM,
            change,
            "policy",
            spec.product_id,
            details,
            PutApimPolicy(spec.product_id, spec.policy_xml, exists),
        )
    for spec in desired.apim_products:
        _plan_links(b, spec, apim.products.get(spec.product_id), apim)
    _plan_retired(b, wanted, apim, catalog_made)


def _plan_retired(b: _Builder, wanted: set[str], apim: ApimState, catalog_made: frozenset[str]) -> None:
    """Products the catalog made that the models file no longer has: unpublished once unused."""
    unmanaged = sorted(pid for pid in apim.products if pid not in wanted and pid not in catalog_made)
    if unmanaged:
        # The provider's own products (and APIM's built-in ones) are none of the catalog's business.
        b.notices.append(f"apim products not made by this catalog, left as they are: {', '.join(unmanaged)}")
    for pid, current in sorted(apim.products.items()):
        if pid in wanted or pid in unmanaged:
            continue
        count = current.subscription_count or 0
        if count:
            if current.state == "published":
                b.notices.append(
                    f"apim product {pid} is not in the models file but has {count} subscription(s): "
                    "left published and not deleted (cancel its subscriptions first)"
                )
        elif current.state != "notPublished":
            b.add(
                Service.APIM,
                Change.ARCHIVE,
                "product",
                pid,
                ["not in the models file, no subscriptions: state published -> notPublished (not deleted)"],
                UnpublishApimProduct(pid),
            )


# APIM links new products to Administrators itself; that link is APIM's, not worth a notice.
APIM_OWN_GROUPS = frozenset({"administrators"})


def _plan_links(b: _Builder, spec: ApimProductSpec, current: ApimProductState | None, apim: ApimState) -> None:
    """Links of the product to its APIs and groups: added when missing (also after drift), removed
    only when the catalog made them and the models file no longer names them."""
    for kind, wanted, existing, have, made in (
        (
            "api",
            spec.apis,
            apim.api_ids,
            current.apis if current else frozenset(),
            current.catalog_apis if current else frozenset(),
        ),
        (
            "group",
            spec.groups,
            apim.group_ids,
            current.groups if current else frozenset(),
            current.catalog_groups if current else frozenset(),
        ),
    ):
        unknown = [t for t in wanted if t not in existing]
        if unknown:
            what = "import or create the API" if kind == "api" else "create the group"
            b.problems.append(
                f"product {spec.product_id} names {kind}(s) {', '.join(unknown)}, which API Management "
                f"does not have: {what} first, or change the models file"
            )
        for target in wanted:
            if target in existing and target not in have:
                reason = "missing (removed since the last apply?)" if target in made else "not linked yet"
                b.add(
                    Service.APIM,
                    Change.CREATE,
                    "link",
                    f"{spec.product_id} -> {kind} {target}",
                    [reason],
                    SetApimLink(spec.product_id, kind, target, linked=True),
                )
        for target in sorted((made & have) - set(wanted)):
            b.add(
                Service.APIM,
                Change.REMOVE,
                "link",
                f"{spec.product_id} -> {kind} {target}",
                ["linked by this catalog; the models file no longer names it"],
                SetApimLink(spec.product_id, kind, target, linked=False),
            )
        others = sorted(have - made - set(wanted) - APIM_OWN_GROUPS)
        if others:
            b.notices.append(
                f"apim product {spec.product_id}: {kind}(s) {', '.join(others)} linked by someone "
                "else, left as they are"
            )


def _apim_fields(spec: ApimProductSpec) -> list[str]:
    return [
        f"display name: {spec.display_name!r}",
        f"description: {spec.description!r}",
        f"subscription required: {spec.subscription_required}, approval required: {spec.approval_required}",
        f"subscriptions limit: {spec.subscriptions_limit}, state: {spec.state}",
    ]
