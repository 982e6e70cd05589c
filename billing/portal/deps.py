"""What the portal's handlers need, built from the app settings (cached per configuration)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from billing import config
from billing.adapters.access_storage import ensure_queue
from billing.adapters.apim_client import apim_service
from billing.adapters.final_invoice_queue import FinalInvoiceQueue
from billing.adapters.mail_smtp import smtp_mailer
from billing.adapters.portal_apim import PortalApim
from billing.adapters.portal_plan_change import PlanChanges
from billing.adapters.portal_stripe import PortalStripe
from billing.adapters.storage import ensure_table, queue
from billing.adapters.stripe_client import stripe_client
from billing.model_loader import load_models
from billing.models import MonetizationModels
from billing.portal.accounts import AccountPorts, PortalUrls
from billing.portal.delegation import decode_key
from billing.portal.devices import DeviceCookies
from billing.portal.hash_budget import HashBudget
from billing.portal.plan_change import PlanChangesPort
from billing.portal.ports import AccountsPort, ApimPort, FinalInvoicesPort, PaymentsPort, SaltsPort
from billing.portal.tokens import parse_session_keys
from billing.portal.trials import TrialsPort
from billing.portal.web import Sessions
from billing.store.accounts import Accounts, UsedSalts
from billing.store.customers import CustomerDirectory
from billing.store.email_links import EmailLinks
from billing.store.tables import (
    ACCOUNTS_TABLE,
    CUSTOMERS_TABLE,
    DELEGATION_SALTS_TABLE,
    EMAIL_TOKENS_TABLE,
    THROTTLES_TABLE,
    TRIALS_TABLE,
    USAGE_BATCH_QUEUE,
)
from billing.store.throttles import Throttles
from billing.store.trials import TrialLedger
from billing.usage.ports import UsageReports
from billing.usage.wiring import usage_source

_SETTINGS = ("APIM_DELEGATION_VALIDATION_KEY", "PORTAL_SESSION_KEYS", "APP_BASE_URL", "APIM_DEVELOPER_PORTAL_URL",
             "DELEGATION_MODE",
             "AzureWebJobsStorage", "STRIPE_API_KEY", "STRIPE_API_BASE", "APIM_MANAGEMENT_ENDPOINT",
             "APIM_SUBSCRIPTION_ID", "APIM_RESOURCE_GROUP", "APIM_SERVICE_NAME", "SMTP_HOST", "SMTP_PORT",
             "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_STARTTLS", "MAIL_SENDER", "USAGE_SOURCE", "LOG_ANALYTICS_ENDPOINT",
             "LOG_ANALYTICS_WORKSPACE_ID", "AZURE_CLIENT_ID", "USAGE_ARM_REQUESTS_PER_SECOND",
             "USAGE_STRIPE_REQUESTS_PER_SECOND", "USAGE_BATCH_SIZE")  # fmt: skip
# One per process: the limit on concurrent password hashing is per instance, whatever the settings.
HASH_BUDGET = HashBudget()


@dataclass(frozen=True)
class PortalDeps:
    delegation_key: bytes  # APIM's: verifies delegation links only
    session_keys: tuple[bytes, ...]  # the app's own, newest first: sessions, CSRF, forms, device cookies
    sessions: Sessions
    devices: DeviceCookies
    app_base_url: str
    portal_url: str
    mode: str  # "full" or "subscriptions"
    models: MonetizationModels
    accounts: AccountsPort
    account_ports: AccountPorts  # what sign-up, sign-in, confirmation and reset need
    apim: ApimPort
    payments: PaymentsPort
    salts: SaltsPort  # delegation salts that already started a session
    final_invoices: FinalInvoicesPort  # a cancellation's final invoice, after the report lag
    usage: UsageReports  # the usage push's source, for the billing page
    trials: TrialsPort  # who has had which product's free trial
    plan_changes: PlanChangesPort  # upgrades, downgrades and their undoing (billing.portal.plan_change)


class ConfigurationError(RuntimeError):
    pass


def portal_deps(env: Mapping[str, str] | None = None) -> PortalDeps:
    values = tuple(config.get(name, env) for name in _SETTINGS)
    return _build(values)


@functools.lru_cache(maxsize=4)
def _build(values: tuple[str, ...]) -> PortalDeps:
    env = dict(zip(_SETTINGS, values, strict=True))
    missing = [n for n in ("APIM_DELEGATION_VALIDATION_KEY", "PORTAL_SESSION_KEYS", "APP_BASE_URL",
                           "APIM_DEVELOPER_PORTAL_URL") if not env[n]]  # fmt: skip
    if missing:
        raise ConfigurationError(f"the portal needs the settings {', '.join(missing)}")
    try:
        key = decode_key(env["APIM_DELEGATION_VALIDATION_KEY"])
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        session_keys = parse_session_keys(env["PORTAL_SESSION_KEYS"])
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    try:
        usage = usage_source(env)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    mode = env["DELEGATION_MODE"]
    if mode not in ("full", "subscriptions"):
        raise ConfigurationError(f"DELEGATION_MODE must be 'full' or 'subscriptions', not {mode!r}")
    base = env["APP_BASE_URL"].rstrip("/")
    portal_url = env["APIM_DEVELOPER_PORTAL_URL"].rstrip("/")
    secure = base.lower().startswith("https://")
    try:
        mailer = smtp_mailer(env)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    # The storage and APIM adapters read the rest of the environment (identity settings) themselves.
    accounts = Accounts(ensure_table(ACCOUNTS_TABLE))
    apim = PortalApim(apim_service())
    account_ports = AccountPorts(
        accounts=accounts,
        links=EmailLinks(ensure_table(EMAIL_TOKENS_TABLE)),
        throttles=Throttles(ensure_table(THROTTLES_TABLE)),
        mailer=mailer,
        apim=apim,
        hashing=HASH_BUDGET,
        urls=PortalUrls(base, portal_url),
    )
    return PortalDeps(
        delegation_key=key,
        session_keys=session_keys,
        sessions=Sessions(session_keys, secure=secure),
        devices=DeviceCookies(session_keys, secure=secure),
        app_base_url=base,
        portal_url=portal_url,
        mode=mode,
        models=load_models(),
        accounts=accounts,
        account_ports=account_ports,
        apim=apim,
        payments=PortalStripe(stripe_client(), CustomerDirectory(ensure_table(CUSTOMERS_TABLE))),
        salts=UsedSalts(ensure_table(DELEGATION_SALTS_TABLE)),
        final_invoices=FinalInvoiceQueue(ensure_queue(queue(USAGE_BATCH_QUEUE))),
        usage=usage,
        trials=TrialLedger(ensure_table(TRIALS_TABLE)),
        plan_changes=PlanChanges(stripe_client(), apim_service(), ensure_queue(queue(USAGE_BATCH_QUEUE))),
    )
