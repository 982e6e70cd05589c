"""The one list of settings the app reads, and their values for a run.

Every setting the app reads is declared in `SETTINGS`; `local.settings.sample.json` and the
Function App settings in `infra/` are checked against this list by the tests. Values are read
from the environment (Azure Functions exposes app settings as environment variables).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    secret: bool = False
    required: bool = True
    default: str = ""
    # What `local.settings.sample.json` holds for the local stack ("" when the runner fills it in).
    local: str = ""


# Settings whose family name is a connection prefix: in Azure they are identity-based
# (`<name>__accountName`, `<name>__credential`, `<name>__clientId`), locally a connection string.
CONNECTION_SETTINGS = frozenset({"AzureWebJobsStorage"})

# Read by the Functions host, not by the app's code; listed so that the checks know them.
PLATFORM_SETTINGS = frozenset(
    {
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_EXTENSION_VERSION",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "AzureWebJobsFeatureFlags",
        "AzureWebJobsSecretStorageType",
    }
)

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "AzureWebJobsStorage",
        "Storage for the app's tables and queues (connection string locally, identity-based in Azure).",
        secret=True,
        local="UseDevelopmentStorage=true",
    ),
    Setting("STRIPE_API_KEY", "Stripe secret or restricted key (sk_/rk_).", secret=True, local="sk_test_emulator"),
    Setting(
        "STRIPE_WEBHOOK_SECRET",
        "Webhook signing secret(s), comma-separated during rotation.",
        secret=True,
        local="whsec_emulator",
    ),
    Setting(
        "STRIPE_API_BASE",
        "Stripe API base URL; empty for Stripe itself.",
        required=False,
        local="http://127.0.0.1:12111",
    ),
    Setting(
        "APIM_SUBSCRIPTION_ID",
        "Azure subscription id of the API Management instance.",
        local="00000000-0000-0000-0000-000000000000",
    ),
    Setting("APIM_RESOURCE_GROUP", "Resource group of the API Management instance.", local="local-rg"),
    Setting("APIM_SERVICE_NAME", "Name of the API Management instance.", local="local-apim"),
    Setting(
        "APIM_MANAGEMENT_ENDPOINT",
        "Azure Resource Manager endpoint.",
        required=False,
        default="https://management.azure.com",
        local="https://127.0.0.1:12112",
    ),
    Setting(
        "APIM_DELEGATION_VALIDATION_KEY",
        "Base64 delegation validation key from the APIM portal.",
        secret=True,
        local="bG9jYWwtZGVsZWdhdGlvbi1rZXktZm9yLWRldmVsb3BtZW50LW9ubHk=",
    ),
    Setting(
        "PORTAL_SESSION_KEYS",
        "Base64 keys (256 bits or more) that sign the portal's sessions, forms and device "
        "cookies, newest first, comma-separated during a rotation (docs/operations.md).",
        secret=True,
        local="bG9jYWwtcG9ydGFsLXNlc3Npb24ta2V5LWZvci1kZXZlbG9wbWVudC1vbmx5LTI1Ng==",
    ),
    Setting("APIM_DEVELOPER_PORTAL_URL", "Base URL of the APIM developer portal.", local="http://127.0.0.1:12113"),
    Setting("APIM_GATEWAY_URL", "Base URL of the APIM gateway, shown to consumers.", local="http://127.0.0.1:12114"),
    Setting(
        "APP_BASE_URL",
        "Public base URL of this Functions app (for Checkout return pages).",
        local="http://127.0.0.1:7071",
    ),
    Setting("AZURE_CLIENT_ID", "Client id of the app's user-assigned managed identity.", required=False),
    Setting(
        "DELEGATION_MODE",
        "'full' (sign-in and subscriptions) or 'subscriptions' only.",
        required=False,
        default="full",
        local="full",
    ),
    Setting(
        "USAGE_PUSH_SCHEDULE",
        "NCRONTAB schedule of the usage push.",
        required=False,
        default="0 0 2 * * *",
        local="0 0 2 * * *",
    ),
    Setting(
        "USAGE_REPORT_LAG_MINUTES",
        "Minutes APIM's usage data may arrive late (decimal minutes, e.g. 30 or "
        "0.05): the daily push reads up to now minus this, and a period's closing report and a cancellation's "
        "final invoice wait this long before they read it. Stripe's invoice finalization grace period must "
        "leave room for it (docs/deploy.md).",
        required=False,
        default="30",
        local="30",
    ),
    Setting(
        "USAGE_SOURCE",
        "Where usage is read: 'logs' (Log Analytics, ApiManagementGatewayLogs; every tier) or "
        "'reports' (APIM's Reports API: classic tiers only, retired on 15 March 2027).",
        required=False,
        default="logs",
        local="logs",
    ),
    Setting(
        "LOG_ANALYTICS_WORKSPACE_ID",
        "Workspace (customer) id of the Log Analytics workspace that receives "
        "APIM's gateway logs; required when USAGE_SOURCE is 'logs'.",
        required=False,
    ),
    Setting(
        "LOG_ANALYTICS_ENDPOINT",
        "Log Analytics query endpoint.",
        required=False,
        default="https://api.loganalytics.io/v1",
        local="https://api.loganalytics.io/v1",
    ),
    Setting(
        "USAGE_STRIPE_REQUESTS_PER_SECOND",
        "Stripe request budget of the usage push, per instance.",
        required=False,
        default="25",
        local="25",
    ),
    Setting(
        "USAGE_ARM_REQUESTS_PER_SECOND",
        "Azure Resource Manager request budget of the usage push, per instance.",
        required=False,
        default="20",
        local="20",
    ),
    Setting("USAGE_BATCH_SIZE", "Subscriptions per usage queue message.", required=False, default="300", local="300"),
    Setting(
        "USAGE_CONFIRM_DELAY_SECONDS",
        "Seconds after a closing report that its delivery is checked against "
        "Stripe's meter summaries (before the invoice finalises, an hour on); retries of pending events and "
        "second reads of a shortfall follow at 1/3, 1, 2, 4 and 8 times it.",
        required=False,
        default="900",
        local="900",
    ),
    Setting(
        "STRIPE_EVENT_DESTINATION_SECRET",
        "Signing secret(s) of the Stripe event destination for thin "
        "events (meter errors), comma-separated during rotation.",
        secret=True,
        required=False,
    ),
    Setting(
        "RECONCILE_SCHEDULE",
        "NCRONTAB schedule of the Stripe/APIM reconcile job.",
        required=False,
        default="0 30 * * * *",
        local="0 30 * * * *",
    ),
    Setting(
        "RETENTION_SCHEDULE",
        "NCRONTAB schedule of the daily purge of rows past their use.",
        required=False,
        default="0 15 3 * * *",
        local="0 15 3 * * *",
    ),
    Setting(
        "SMTP_HOST",
        "SMTP server of the portal's mails (Azure Communication Services: smtp.azurecomm.net).",
        local="127.0.0.1",
    ),
    Setting(
        "SMTP_PORT",
        "SMTP port (587 with STARTTLS for Azure Communication Services).",
        required=False,
        default="587",
        local="2525",
    ),
    Setting("SMTP_USERNAME", "SMTP user name (ACS: the SMTP Username resource); empty: no login.", required=False),
    Setting(
        "SMTP_PASSWORD", "SMTP password (ACS: the Entra application's client secret).", secret=True, required=False
    ),
    Setting(
        "SMTP_STARTTLS",
        "'true' to require STARTTLS before logging in and sending (always in Azure).",
        required=False,
        default="true",
        local="false",
    ),
    Setting(
        "MAIL_SENDER",
        "From address of the portal's mails (a sender address of the ACS e-mail domain).",
        local="DoNotReply@portal.localhost",
    ),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


# What App Service leaves in a setting whose Key Vault reference it could not resolve.
_UNRESOLVED_KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


def _has_value(value: str) -> bool:
    value = value.strip()
    return bool(value) and not value.startswith(_UNRESOLVED_KEY_VAULT_REFERENCE)


def _is_set(name: str, env: Mapping[str, str]) -> bool:
    if _has_value(env.get(name, "")):
        return True
    # Identity-based connections are configured as `<name>__accountName` / `__serviceUri`.
    return name in CONNECTION_SETTINGS and any(
        key.startswith(f"{name}__") and _has_value(value) for key, value in env.items()
    )


def missing_settings(env: Mapping[str, str] | None = None) -> list[str]:
    """Names of required settings that have no value (never the values of any)."""
    source = os.environ if env is None else env
    return [s.name for s in SETTINGS if s.required and not _is_set(s.name, source)]


def get(name: str, env: Mapping[str, str] | None = None) -> str:
    """The value of a declared setting, or its default. Undeclared names are a programming error.

    An unresolved Key Vault reference counts as no value: it must never be used as a key.
    """
    setting = SETTINGS_BY_NAME[name]
    source = os.environ if env is None else env
    value = source.get(name, "").strip()
    return value if _has_value(value) else setting.default
