"""APIM product policies generated from the revenue model, for the tier of the instance.

Rate limits are the product-scope `rate-limit`, which counts per subscription on every tier.

Quotas must follow the billing month and count only what is billed. On the classic tiers
(Developer, Basic, Standard, Premium) that is `quota-by-key`, counted per subscription
(`counter-key` = the subscription id) and only for billable outcomes (`increment-condition`, on
the response): a paid product's quota has no renewal period of its own ("When renewal-period is
set to 0, the period is set to infinite") because the app resets its counter through the quotas
API when Stripe starts the subscription's next period; Free has no Stripe period, so its quota
renews every 30 days. The v2 tiers lack `quota-by-key` ("APPLIES TO: Developer | Basic | Standard
| Premium"): there the product-scope `quota` is the fallback, a fixed 30-day window per
subscription that also counts failed calls (docs/deploy.md states the difference). `rate-limit`
comes first so that calls refused for rate never consume quota.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from billing.models import CallOutcome, Product

POLICY_SECTIONS = ("inbound", "backend", "outbound", "on-error")
RATE_LIMIT_WINDOW_SECONDS = 60
CLASSIC_TIERS = frozenset({"Developer", "Basic", "Standard", "Premium"})
ALL_TIERS = CLASSIC_TIERS | {"Consumption", "BasicV2", "StandardV2", "PremiumV2"}
DEFAULT_TIER = "Developer"  # what the local stack's APIM emulator is by default
# APIM's report classes (ReportRecordContract): success is "HttpStatusCode <= 301 and NotModified
# and TemporaryRedirect"; failed is "BadRequest(400) and any Code between InternalServerError (500)
# and 600". Blocked calls (401, 403, 429) are never billable.
_OUTCOME_CONDITIONS = {
    CallOutcome.SUCCESS: "context.Response.StatusCode <= 301 || context.Response.StatusCode == 304 || "
    "context.Response.StatusCode == 307",
    CallOutcome.FAILED: "context.Response.StatusCode == 400 || (context.Response.StatusCode >= 500 && "
    "context.Response.StatusCode < 600)",
}


def has_quota_by_key(tier: str) -> bool:
    return tier in CLASSIC_TIERS


def billable_condition(product: Product) -> str:
    """The policy expression that is true for a response the product bills."""
    parts = [_OUTCOME_CONDITIONS[o] for o in product.billable_outcomes]
    return "@(" + " || ".join(f"({p})" for p in parts) + ")"


def resets_quota_each_period(product: Product, tier: str) -> bool:
    """Whether the app resets this product's quota counters when Stripe starts a new period: a paid
    product's monthly quota, which is the billing month (quotas of other lengths keep their own)."""
    return product.quota is not None and product.quota.period == "month" and product.is_paid and has_quota_by_key(tier)


def product_policy_xml(product: Product, tier: str = DEFAULT_TIER) -> str:
    """The `<policies>` document for the product: deterministic, with `<base />` in every section."""
    root = ET.Element("policies")
    for section_name in POLICY_SECTIONS:
        section = ET.SubElement(root, section_name)
        ET.SubElement(section, "base")
        if section_name != "inbound":
            continue
        if product.rate_limit is not None:
            ET.SubElement(
                section,
                "rate-limit",
                {
                    "calls": str(product.rate_limit.calls_per_minute),
                    "renewal-period": str(RATE_LIMIT_WINDOW_SECONDS),
                },
            )
        if product.quota is None:
            continue
        if has_quota_by_key(tier):
            renewal = 0 if resets_quota_each_period(product, tier) else product.quota.renewal_period_seconds
            ET.SubElement(
                section,
                "quota-by-key",
                {
                    "calls": str(product.quota.calls),
                    "renewal-period": str(renewal),
                    "counter-key": "@(context.Subscription.Id)",
                    "increment-condition": billable_condition(product),
                },
            )
        else:
            ET.SubElement(
                section,
                "quota",
                {"calls": str(product.quota.calls), "renewal-period": str(product.quota.renewal_period_seconds)},
            )
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode", short_empty_elements=True) + "\n"
