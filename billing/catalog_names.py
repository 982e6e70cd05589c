"""Stable names that tie Stripe and APIM objects to the revenue model's product ids.

Pure functions: the catalog sync creates objects under these names, checkout finds prices by
them, the usage push sends meter events under them, and webhooks read the metadata keys.
"""

from __future__ import annotations

# Metadata on every Stripe object the catalog makes (product, price, meter): the model's id.
PRODUCT_METADATA_KEY = "monetization_product_id"
# Which price of a product a Stripe price is: "flat" (licensed, in advance) or "usage" (metered).
PRICE_ROLE_METADATA_KEY = "monetization_price_role"
# Marks the Stripe customer portal configuration the catalog made (value "portal").
PORTAL_CONFIG_METADATA_KEY = "monetization_catalog"

# Metadata set on the Stripe subscription at checkout (subscription_data.metadata).
SUB_META_APIM_USER = "apim_user_id"
SUB_META_PRODUCT = "apim_product_id"
SUB_META_NAME = "apim_subscription_name"
# Set by the app when the consumer cancels (unix time, Stripe's present): access ended then, while the
# Stripe subscription lives on until its final invoice is made (billing.usage.final_invoice).
SUB_META_ACCESS_ENDED = "apim_access_ended_at"
# On a subscription that starts a free trial: the portal account's address as the trial ledger keys it
# (billing.store.trials), so the trial is claimed under the identity the offer was checked under.
SUB_META_TRIAL_MAIL = "apim_trial_mail_key"
# Plan changes (billing.portal.plan_change). The product the subscription had before the current one,
# and when each began (Stripe's time; 0 or absent: the subscription's start). An upgrade sets them at
# once; a downgrade's schedule sets them in the metadata of the phase that starts at the period end
# ("Metadata on a schedule's phase will update the underlying subscription's metadata when the phase
# is entered", SubscriptionScheduleUpdateParams.phases[].metadata).
SUB_META_PREVIOUS_PRODUCT = "apim_previous_product_id"
SUB_META_PRODUCT_SINCE = "apim_product_since"
SUB_META_PREVIOUS_SINCE = "apim_previous_product_since"
# The old product's metered item an upgrade left on the subscription until the usage up to the change
# is reported to its meter (after the report lag); cleared when the item is removed.
SUB_META_RETIRING_ITEM = "apim_retiring_usage_item"
# A move to a free product at the period end: the subscription ends then (cancel_at_period_end) and the
# consumer gets a subscription to this product.
SUB_META_NEXT_PRODUCT = "apim_next_product_id"
# On the Stripe customer: the APIM user it belongs to (one customer per APIM user).
CUSTOMER_META_APIM_USER = "apim_user_id"
# Meter event payload keys (Stripe's defaults for a meter).
METER_CUSTOMER_KEY = "stripe_customer_id"
METER_VALUE_KEY = "value"


def stripe_product_id(product_id: str) -> str:
    """Stripe accepts a caller-chosen product id, which makes creation idempotent."""
    return f"apim-{product_id}"


def flat_price_lookup_key(product_id: str) -> str:
    return f"{product_id}-flat"


def usage_price_lookup_key(product_id: str) -> str:
    return f"{product_id}-usage"


def meter_event_name(product_id: str) -> str:
    """One meter per metered product, so usage of one product can never be billed on another's price.

    The meter receives the product's billable calls beyond its included calls (see billing.pricing).
    """
    return "apim_calls_" + product_id.replace("-", "_")


def apim_product_id(product_id: str) -> str:
    """APIM product ids are the model's ids as they are."""
    return product_id


def free_subscription_id(product_id: str, uid: str) -> str:
    """The APIM subscription id of a consumer's free product: one per consumer and product.

    Forms sent at the same moment all PUT the same subscription, and subscribing again after a
    cancellation re-activates it, so APIM's quota counter (kept per subscription) continues the
    month's count instead of starting a new quota. 128 bits: no two consumers ever share one.
    """
    import hashlib  # noqa: PLC0415 - the module is otherwise import-free

    digest = hashlib.sha256(f"{uid}\n{product_id}".encode()).hexdigest()[:32]
    return f"{product_id}-{digest}"
