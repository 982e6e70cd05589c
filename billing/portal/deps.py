"""What the portal's handlers need: ports only. The composition root (`billing.bootstrap`) builds it."""

from __future__ import annotations

from dataclasses import dataclass

from billing.models import MonetizationModels
from billing.portal.accounts import AccountPorts
from billing.portal.devices import DeviceCookies
from billing.portal.hash_budget import HashBudget
from billing.portal.plan_change import PlanChangesPort
from billing.portal.ports import AccountsPort, ApimPort, FinalInvoicesPort, PaymentsPort, SaltsPort
from billing.portal.tokens import Signer
from billing.portal.trials import TrialsPort
from billing.portal.web import Sessions
from billing.usage.ports import UsageReports

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

    @property
    def portal_home(self) -> str:
        """The developer portal's home page: where every page of this app links back to."""
        return self.portal_url + "/"

    def signer(self, purpose: str) -> Signer:
        """Tokens of one purpose (a form, a cookie), signed with the session keys."""
        return Signer(self.session_keys, purpose)


class ConfigurationError(RuntimeError):
    pass
