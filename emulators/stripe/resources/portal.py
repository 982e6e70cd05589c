"""The customer portal: configurations (create, retrieve, update, list) and portal sessions.

A session follows a configuration: the one named by `configuration`, else the default one. The
default configuration is the portal settings saved in the Dashboard ("If `true`, this
configuration can be managed in the Dashboard and portal sessions will use this configuration
unless it is overriden when creating the session"); configurations created through the API are
never the default. Until the settings are saved (`Config.portal_settings`,
`StripeEmulator.save_portal_settings`, `POST /_emulator/billing_portal/default_configuration`)
a session without `configuration` fails with Stripe's error for that case.
"""

from __future__ import annotations

import copy
from typing import Any

from emulators.stripe.core import Core
from emulators.stripe.resources.catalog import merge_metadata
from emulators.stripe.routes import Request, route
from emulators.stripe.wire import (
    EXPAND,
    LIST,
    StripeError,
    arr,
    b,
    enum,
    i,
    invalid,
    metadata,
    nullable,
    obj,
    s,
    validate,
)

KIND = "billing_portal.configuration"
PRORATION = enum("always_invoice", "create_prorations", "none")
REASONS = enum(
    "customer_service",
    "low_quality",
    "missing_features",
    "other",
    "switched_service",
    "too_complex",
    "too_expensive",
    "unused",
)
FEATURES = obj(
    {
        "customer_update": obj(
            {"allowed_updates": arr(enum("address", "email", "name", "phone", "shipping", "tax_id")), "enabled": b}
        ),
        "invoice_history": obj({"enabled": b}),
        "payment_method_update": obj({"enabled": b, "payment_method_configuration": nullable(s)}),
        "subscription_cancel": obj(
            {
                "cancellation_reason": obj({"enabled": b, "options": arr(REASONS), "feedback_options": arr(s)}),
                "enabled": b,
                "mode": enum("at_period_end", "immediately"),
                "proration_behavior": PRORATION,
            }
        ),
        "subscription_pause": obj({"enabled": b}),
        "subscription_update": obj(
            {
                "billing_cycle_anchor": enum("now", "unchanged"),
                "default_allowed_updates": arr(enum("price", "promotion_code", "quantity")),
                "enabled": b,
                "products": arr(
                    obj(
                        {
                            "product": s,
                            "prices": arr(s),
                            "adjustable_quantity": obj({"enabled": b, "maximum": i, "minimum": i}, ("enabled",)),
                        },
                        ("product", "prices"),
                    )
                ),
                "proration_behavior": PRORATION,
                "schedule_at_period_end": obj(
                    {"conditions": arr(obj({"type": enum("decreasing_item_amount", "shortening_interval")}, ("type",)))}
                ),
                "trial_update_behavior": enum("continue_trial", "end_trial"),
            }
        ),
    }
)
FIELDS = {
    "business_profile": obj({"headline": nullable(s), "privacy_policy_url": s, "terms_of_service_url": s}),
    "default_return_url": nullable(s),
    "features": FEATURES,
    "login_page": obj({"enabled": b}, ("enabled",)),
    "metadata": metadata,
    "name": nullable(s),
    **EXPAND,
}

# What a feature looks like when the parameters leave it out: the published fixture's values, and
# the SDK's "Defaults to a value of `none`" / "`end_trial`" / "a single one-month option".
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "customer_update": {"allowed_updates": [], "enabled": False},
    "invoice_history": {"enabled": False},
    "payment_method_update": {"enabled": False, "payment_method_configuration": None},
    "subscription_cancel": {
        "cancellation_reason": {"enabled": False, "feedback_options": None, "options": []},
        "enabled": False,
        "mode": "at_period_end",
        "proration_behavior": "none",
    },
    "subscription_pause": {
        "duration": {"interval_options": [{"interval": "month", "interval_count": 1}], "type": "interval_options"},
        "enabled": False,
    },
    "subscription_update": {
        "billing_cycle_anchor": None,
        "default_allowed_updates": [],
        "enabled": False,
        "products": None,
        "proration_behavior": "none",
        "schedule_at_period_end": {"conditions": []},
        "trial_update_behavior": "end_trial",
    },
}
# Stripe's answer to a session without `configuration` before the portal settings were saved.
NO_DEFAULT = (
    "You can’t create a portal session in test mode until you save your customer portal settings in test "
    "mode at https://dashboard.stripe.com/test/settings/billing/portal."
)
# What saving the portal settings in the Dashboard without changing them gives (guess: the
# Dashboard's switches for invoices, payment methods and cancellation at the period end).
DASHBOARD_DEFAULTS: dict[str, Any] = {
    "features": {
        "invoice_history": {"enabled": True},
        "payment_method_update": {"enabled": True},
        "subscription_cancel": {"enabled": True, "mode": "at_period_end", "proration_behavior": "none"},
    }
}


def _merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested parameters update only what they name; lists are replaced."""
    merged = copy.deepcopy(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_features(core: Core, features: dict[str, Any]) -> None:
    cancel = features["subscription_cancel"]
    if cancel["proration_behavior"] == "always_invoice":
        # The SDK: "Passing `always_invoice` will result in an error."
        raise invalid(
            "features[subscription_cancel][proration_behavior]",
            "Invalid features[subscription_cancel][proration_behavior]: must be one of none, create_prorations",
        )
    if cancel["proration_behavior"] == "create_prorations" and cancel["mode"] != "immediately":
        # "`create_prorations`, which is only compatible with `mode=immediately`"
        raise invalid(
            "features[subscription_cancel][proration_behavior]",
            "create_prorations is only compatible with features[subscription_cancel][mode]=immediately.",
        )
    products = features["subscription_update"]["products"] or []
    if len(products) > 10:  # "The list of up to 10 products"
        raise invalid("features[subscription_update][products]", "A configuration can list at most 10 products.")
    for n, entry in enumerate(products):
        param = f"features[subscription_update][products][{n}]"
        product = core.store.get("product", entry["product"], param=f"{param}[product]")
        for m, price_id in enumerate(entry["prices"]):
            price = core.store.get("price", price_id, param=f"{param}[prices][{m}]")
            if price["product"] != product["id"] or price["recurring"] is None:
                raise invalid(
                    f"{param}[prices][{m}]", f"The price {price_id} must be a recurring price of {product['id']}."
                )
        quantity = entry.get("adjustable_quantity") or {}
        entry["adjustable_quantity"] = {
            "enabled": quantity.get("enabled", False),
            "maximum": quantity.get("maximum"),
            "minimum": quantity.get("minimum", 1),
        }


def _features(core: Core, current: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    features = _merge(current, given)
    _check_features(core, features)
    return features


def new_configuration(core: Core, p: dict[str, Any], is_default: bool) -> dict[str, Any]:
    """A configuration from validated create parameters."""
    now = core.now()
    profile = {
        "headline": None,
        "privacy_policy_url": None,
        "terms_of_service_url": None,
        **p.get("business_profile", {}),
    }
    config = {
        "id": core.store.new_id("bpc"),
        "object": KIND,
        "active": True,
        "application": None,
        "business_profile": profile,
        "created": now,
        "default_return_url": p.get("default_return_url"),
        "features": _features(core, DEFAULT_FEATURES, p.get("features", {})),
        "is_default": is_default,
        "livemode": False,
        "login_page": {"enabled": bool((p.get("login_page") or {}).get("enabled")), "url": None},
        "metadata": p.get("metadata", {}),
        "name": p.get("name"),
        "updated": now,
    }
    if config["login_page"]["enabled"]:
        config["login_page"]["url"] = f"{core.base_url}/p/login/{config['id']}"
    return core.store.put(KIND, config)


def default_configuration(core: Core) -> dict[str, Any] | None:
    return next((c for c in core.store.all(KIND) if c["is_default"]), None)


def save_settings(core: Core, settings: dict[str, Any]) -> dict[str, Any]:
    """Save the portal settings as the Dashboard does: they create or update the default configuration.

    `settings` has the create parameters' shape (Python values, e.g. {"features": {...}}).
    """
    p = validate(_form(settings), FIELDS)
    current = default_configuration(core)
    if current is None:
        return new_configuration(core, p, is_default=True)
    _apply(core, current, p)
    return current


def _form(value: Any) -> Any:
    """Python values to wire form, so settings given from Python validate like API parameters."""
    if isinstance(value, dict):
        return {k: _form(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_form(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _apply(core: Core, config: dict[str, Any], p: dict[str, Any]) -> None:
    if "features" in p:
        config["features"] = _features(core, config["features"], p["features"])
    if "business_profile" in p:
        config["business_profile"].update(p["business_profile"])
    for key in ("default_return_url", "name", "active"):
        if key in p:
            config[key] = p[key]
    if "metadata" in p:
        config["metadata"] = merge_metadata(config["metadata"], p["metadata"])
    if "login_page" in p:
        enabled = p["login_page"]["enabled"]
        config["login_page"] = {
            "enabled": enabled,
            "url": f"{core.base_url}/p/login/{config['id']}" if enabled else None,
        }
    config["updated"] = core.now()


@route("POST", "/v1/billing_portal/configurations")
def create_configuration(req: Request) -> dict[str, Any]:
    p = validate(req.params, FIELDS, ("features",))
    for name, feature in p["features"].items():
        if name != "subscription_pause" and "enabled" not in feature:
            raise StripeError(
                f"Missing required param: features[{name}][enabled].",
                code="parameter_missing",
                param=f"features[{name}][enabled]",
            )
    return new_configuration(req.core, p, is_default=False)  # API-made configurations are never the default


@route("GET", "/v1/billing_portal/configurations/{id}")
def get_configuration(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get(KIND, req.args[0], "billing portal configuration", "configuration")


@route("POST", "/v1/billing_portal/configurations/{id}")
def update_configuration(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**FIELDS, "active": b})
    config = req.core.store.get(KIND, req.args[0], "billing portal configuration", "configuration")
    _apply(req.core, config, p)
    return config


@route("GET", "/v1/billing_portal/configurations")
def list_configurations(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "active": b, "is_default": b})
    found = [c for c in req.core.store.all(KIND) if all(c[k] == p[k] for k in ("active", "is_default") if k in p)]
    return req.core.page(found, p, "/v1/billing_portal/configurations")


# ---- sessions ------------------------------------------------------------------------------------
@route("POST", "/v1/billing_portal/sessions")
def create_portal_session(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"customer": s, "return_url": s, "locale": s, "configuration": s, **EXPAND}, ("customer",))
    core = req.core
    customer = core.store.get("customer", p["customer"], param="customer")
    config: dict[str, Any] | None
    if "configuration" in p:
        config = core.store.get(KIND, p["configuration"], "billing portal configuration", "configuration")
        if not config["active"]:  # "Whether the configuration is active and can be used to create portal sessions."
            raise invalid(
                "configuration",
                f"The configuration {config['id']} is inactive; activate it or use another "
                "one to create portal sessions.",
            )
    else:
        config = default_configuration(core)
        if config is None:
            raise StripeError(NO_DEFAULT)
    portal_id = core.store.new_id("bps")
    portal = {
        "id": portal_id,
        "object": "billing_portal.session",
        "configuration": config["id"],
        "created": core.now(),
        "customer": customer["id"],
        "customer_account": None,
        "flow": None,
        "livemode": False,
        "locale": p.get("locale"),
        "on_behalf_of": None,
        "return_url": p.get("return_url") or config["default_return_url"],
        "url": f"{core.base_url}/p/session/{portal_id}",
    }
    return core.store.put("billing_portal.session", portal)
