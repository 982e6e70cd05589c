"""In-memory fakes of the portal's own ports (billing.portal.ports and the account services' ports), for
unit tests of billing.portal.accounts, account_ops, subscribe and unsubscribe.

The stores keep what a Table Storage row would keep, with ETags, so the services' conditional writes
are exercised as they are against Azurite. APIM and Stripe record what they were asked to do in `calls`
(a list several fakes can share, to check the order of steps across services). Each fake is checked
against its Protocol at the end of the module.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from billing.portal.accounts import AccountPorts, PortalUrls
from billing.portal.hash_budget import HashBudget
from billing.portal.mails import Mail, MailerPort, MailError
from billing.portal.ports import (
    AccountsPort,
    ApimPort,
    ApimSubscription,
    BillingPeriod,
    CheckoutInfo,
    CheckoutRequest,
    Debt,
    EmailLinksPort,
    FinalInvoicesPort,
    PaymentsPort,
)
from billing.portal.records import Account, AccountExistsError, EmailLink, normalise_email
from billing.portal.throttle import Limit, ThrottlePort

_etags = itertools.count(1)
_T = TypeVar("_T")


def _etag() -> str:
    return f"e{next(_etags)}"


class InMemoryAccounts:
    def __init__(self, *accounts: Account) -> None:
        self.rows: dict[str, tuple[Account, str]] = {normalise_email(a.email): (a, _etag()) for a in accounts}

    def get(self, email: str) -> Account | None:
        found = self.rows.get(normalise_email(email))
        return found[0] if found else None

    def get_with_etag(self, email: str) -> tuple[Account, str] | None:
        return self.rows.get(normalise_email(email))

    def create(self, account: Account) -> None:
        if normalise_email(account.email) in self.rows:
            raise AccountExistsError(account.email)
        self.rows[normalise_email(account.email)] = (account, _etag())

    def replace(self, account: Account, etag: str) -> bool:
        found = self.rows.get(normalise_email(account.email))
        if found is None or found[1] != etag:
            return False
        self.rows[normalise_email(account.email)] = (account, _etag())
        return True

    def delete(self, email: str) -> None:
        self.rows.pop(normalise_email(email), None)


class InMemoryLinks:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[EmailLink, str]] = {}

    def create(self, token: str, link: EmailLink) -> None:
        assert token not in self.rows
        self.rows[token] = (link, _etag())

    def get(self, token: str) -> tuple[EmailLink, str] | None:
        return self.rows.get(token)

    def replace(self, token: str, link: EmailLink, etag: str) -> bool:
        found = self.rows.get(token)
        if found is None or found[1] != etag:
            return False
        self.rows[token] = (link, _etag())
        return True


class InMemoryThrottles:
    def __init__(self) -> None:
        self.windows: dict[str, tuple[int, int]] = {}  # key -> (window start, uses)

    def take(self, key: str, limit: Limit, now: int) -> int:
        start, uses = self.windows.get(key, (now, 0))
        if now - start >= limit.window_seconds:
            start, uses = now, 0
        if uses >= limit.uses:
            return start + limit.window_seconds - now
        self.windows[key] = (start, uses + 1)
        return 0

    def clear(self, key: str) -> None:
        self.windows.pop(key, None)


class RecordingMailer:
    def __init__(self) -> None:
        self.sent: list[Mail] = []
        self.down = False

    def send(self, mail: Mail) -> None:
        if self.down:
            raise MailError("the test's mail server is down")
        self.sent.append(mail)

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.sent if m.to == address]

    def link(self, address: str) -> str:
        """The token of the newest link mailed to the address."""
        text = self.to(address)[-1].text
        return text.split("token=", 1)[1].split()[0]


class FakeApim:
    """APIM as the portal sees it: users by id with their e-mail, who administers the portal, and
    subscriptions. Every instance has its administrator, user 1; `users` adds more."""

    def __init__(self, users: Mapping[str, str] | None = None, calls: list[str] | None = None) -> None:
        self.users: dict[str, str] = {"1": "admin@provider.example", **(users or {})}
        self.names: dict[str, tuple[str, str]] = {}
        self.administrators: set[str] = {"1"}
        self.subs: dict[str, ApimSubscription] = {}
        self.calls: list[str] = [] if calls is None else calls

    def find_user_by_email(self, email: str) -> str | None:
        return next((uid for uid, mail in self.users.items() if mail.lower() == email.lower()), None)

    def is_administrator(self, uid: str) -> bool:
        return uid in self.administrators

    def create_user(self, uid: str, email: str, first_name: str, last_name: str) -> None:
        assert self.find_user_by_email(email) in (None, uid), "APIM refuses a second user with one address"
        self.users[uid] = email
        self.names[uid] = (first_name, last_name)

    def update_user_names(self, uid: str, first_name: str, last_name: str) -> None:
        self.calls.append(f"apim:{uid}:names")
        self.names[uid] = (first_name, last_name)

    def delete_user(self, uid: str) -> None:
        self.calls.append("apim:delete-user")
        self.users.pop(uid, None)
        self.subs = {sid: s for sid, s in self.subs.items() if s.owner_id != uid}

    def user_email(self, uid: str) -> str | None:
        return self.users.get(uid)

    def sign_in_token(self, uid: str, expiry: datetime) -> str:
        return f"token-{uid}-{int(expiry.timestamp())}"

    def user_subscriptions(self, uid: str) -> Sequence[ApimSubscription]:
        return [s for s in self.subs.values() if s.owner_id == uid]

    def get_subscription(self, sid: str) -> ApimSubscription | None:
        return self.subs.get(sid)

    def create_subscription(self, sid: str, uid: str, product_id: str, name: str, state: str) -> None:
        self.subs[sid] = ApimSubscription(sid, uid, product_id, name, state, None, None)

    def set_subscription_state(self, sid: str, state: str, comment: str) -> None:
        self.calls.append(f"apim:{sid}:{state}")
        self.subs[sid] = dataclasses.replace(self.subs[sid], state=state)


class FakePayments:
    """Stripe as the portal sees it: prices by lookup key, and the Checkouts, cancels and access ends asked
    for. A test sets what Stripe would answer: `debts`, `pending` (final invoices to come), `live`
    (subscriptions not ended), `clock_time` (a test clock's present) and `ended_in_stripe`."""

    def __init__(self, prices: Mapping[str, str] | None = None, calls: list[str] | None = None) -> None:
        self.prices = dict(prices or {})
        self.calls: list[str] = [] if calls is None else calls
        self.checkouts: list[CheckoutRequest] = []
        self.customers: set[str] = set()  # users with a customer
        self.debts: list[Debt] = []
        self.pending: list[str] = []
        self.live: list[str] = []
        self.clock_time: int | None = None
        self.ended_in_stripe = False  # Stripe ended the subscription before the consumer cancelled it

    def find_customer(self, uid: str) -> str | None:
        return f"cus_{uid}" if uid in self.customers else None

    def find_or_create_customer(self, uid: str, email: str | None) -> str:
        self.customers.add(uid)
        return f"cus_{uid}"

    def price_ids(self, lookup_keys: Sequence[str]) -> dict[str, str]:
        return {k: v for k, v in self.prices.items() if k in lookup_keys}

    def create_checkout(self, request: CheckoutRequest, idempotency_key: str) -> str:
        self.checkouts.append(request)
        return "https://checkout.stripe.com/c/pay/cs_test_1"

    def checkout_info(self, session_id: str) -> CheckoutInfo | None:
        return None

    def cancel_subscription(self, subscription_id: str) -> None:
        self.calls.append(f"stripe:cancel:{subscription_id}")

    def end_access(self, subscription_id: str, at: int) -> bool:
        self.calls.append(f"stripe:end-access:{subscription_id}:at={at}")
        return not self.ended_in_stripe

    def pending_final_invoices(self, uid: str) -> Sequence[str]:
        return self.pending

    def subscription_period(self, subscription_id: str) -> BillingPeriod | None:
        return BillingPeriod(1_000, 2_000, self.clock_time)

    def billing_portal_url(self, customer_id: str, return_url: str) -> str | None:
        return f"https://billing.stripe.com/p/session/{customer_id}"

    def live_subscriptions(self, uid: str) -> Sequence[str]:
        return self.live

    def expire_open_checkouts(self, uid: str) -> None:
        self.calls.append("stripe:expire-checkouts")

    def outstanding_invoices(self, uid: str, email: str | None) -> Sequence[Debt]:
        return self.debts


class FakeFinalInvoices:
    """The final invoice jobs queued, as steps in `calls`."""

    def __init__(self, calls: list[str] | None = None) -> None:
        self.calls: list[str] = [] if calls is None else calls

    def schedule(self, subscription_id: str, period_start: int, period_end: int, cancel_at: int) -> None:
        self.calls.append(f"queue:final:{subscription_id}:{period_start}:{period_end}:at={cancel_at}")


class CountingBudget(HashBudget):
    """A hashing budget that counts the hashes it let through (each costs 19 MiB and a core)."""

    def __init__(self) -> None:
        super().__init__(slots=4)
        self.hashes = 0

    def compute(self, work: Callable[[], _T]) -> _T:
        self.hashes += 1
        return super().compute(work)


def account_ports(*accounts: Account, apim: FakeApim | None = None) -> AccountPorts:
    return AccountPorts(
        accounts=InMemoryAccounts(*accounts),
        links=InMemoryLinks(),
        throttles=InMemoryThrottles(),
        mailer=RecordingMailer(),
        apim=apim or FakeApim(),
        hashing=CountingBudget(),
        urls=PortalUrls("https://app.example", "https://portal.example"),
    )


# mypy proves each fake has every method of its port, with the port's signatures.
_accounts: AccountsPort = InMemoryAccounts()
_links: EmailLinksPort = InMemoryLinks()
_throttles: ThrottlePort = InMemoryThrottles()
_mailer: MailerPort = RecordingMailer()
_apim: ApimPort = FakeApim()
_payments: PaymentsPort = FakePayments()
_final_invoices: FinalInvoicesPort = FakeFinalInvoices()
