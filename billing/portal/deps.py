"""What the portal's handlers need, built from the app settings (cached per configuration)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from billing import config
from billing.adapters.apim_client import apim_service
from billing.adapters.portal_apim import PortalApim
from billing.adapters.portal_stripe import PortalStripe
from billing.adapters.storage import ensure_table
from billing.adapters.stripe_client import stripe_client
from billing.model_loader import load_models
from billing.models import MonetizationModels
from billing.portal.delegation import decode_key
from billing.portal.ports import AccountsPort, ApimPort, AttemptsPort, PaymentsPort, SaltsPort
from billing.portal.web import Sessions
from billing.store.accounts import Accounts, LoginAttempts, UsedSalts
from billing.store.tables import ACCOUNTS_TABLE, DELEGATION_SALTS_TABLE, LOGIN_ATTEMPTS_TABLE

_SETTINGS = ("APIM_DELEGATION_VALIDATION_KEY", "APP_BASE_URL", "APIM_DEVELOPER_PORTAL_URL", "DELEGATION_MODE",
             "AzureWebJobsStorage", "STRIPE_API_KEY", "STRIPE_API_BASE", "APIM_MANAGEMENT_ENDPOINT",
             "APIM_SUBSCRIPTION_ID", "APIM_RESOURCE_GROUP", "APIM_SERVICE_NAME")  # fmt: skip


@dataclass(frozen=True)
class PortalDeps:
    delegation_key: bytes
    sessions: Sessions
    app_base_url: str
    portal_url: str
    mode: str  # "full" or "subscriptions"
    models: MonetizationModels
    accounts: AccountsPort
    attempts: AttemptsPort
    apim: ApimPort
    payments: PaymentsPort
    salts: SaltsPort  # delegation salts that already started a session


class ConfigurationError(RuntimeError):
    pass


def portal_deps(env: Mapping[str, str] | None = None) -> PortalDeps:
    values = tuple(config.get(name, env) for name in _SETTINGS)
    return _build(values)


@functools.lru_cache(maxsize=4)
def _build(values: tuple[str, ...]) -> PortalDeps:
    env = dict(zip(_SETTINGS, values, strict=True))
    missing = [n for n in ("APIM_DELEGATION_VALIDATION_KEY", "APP_BASE_URL", "APIM_DEVELOPER_PORTAL_URL") if not env[n]]
    if missing:
        raise ConfigurationError(f"the portal needs the settings {', '.join(missing)}")
    try:
        key = decode_key(env["APIM_DELEGATION_VALIDATION_KEY"])
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    mode = env["DELEGATION_MODE"]
    if mode not in ("full", "subscriptions"):
        raise ConfigurationError(f"DELEGATION_MODE must be 'full' or 'subscriptions', not {mode!r}")
    base = env["APP_BASE_URL"].rstrip("/")
    # The storage and APIM adapters read the rest of the environment (identity settings) themselves.
    return PortalDeps(
        delegation_key=key,
        sessions=Sessions(key, secure=base.lower().startswith("https://")),
        app_base_url=base,
        portal_url=env["APIM_DEVELOPER_PORTAL_URL"].rstrip("/"),
        mode=mode,
        models=load_models(),
        accounts=Accounts(ensure_table(ACCOUNTS_TABLE)),
        attempts=LoginAttempts(ensure_table(LOGIN_ATTEMPTS_TABLE)),
        apim=PortalApim(apim_service()),
        payments=PortalStripe(stripe_client()),
        salts=UsedSalts(ensure_table(DELEGATION_SALTS_TABLE)),
    )
