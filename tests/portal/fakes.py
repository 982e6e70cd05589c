"""In-memory fakes of the account services' ports, for unit tests of billing.portal.accounts.

Each keeps what a Table Storage row would keep, with ETags, so the services' conditional writes
are exercised as they are against Azurite.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TypeVar

from billing.portal.accounts import AccountPorts, PortalUrls
from billing.portal.hash_budget import HashBudget
from billing.portal.mails import Mail, MailError
from billing.portal.records import Account, AccountExistsError, EmailLink, normalise_email
from billing.portal.throttle import Limit

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


class FakeApimUsers:
    """The user side of ApimPort: users by id with their e-mail, and who administers the portal."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {"1": "admin@provider.example"}  # every instance's administrator
        self.administrators: set[str] = {"1"}

    def find_user_by_email(self, email: str) -> str | None:
        return next((uid for uid, mail in self.users.items() if mail.lower() == email.lower()), None)

    def is_administrator(self, uid: str) -> bool:
        return uid in self.administrators

    def create_user(self, uid: str, email: str, first_name: str, last_name: str) -> None:
        assert self.find_user_by_email(email) in (None, uid), "APIM refuses a second user with one address"
        self.users[uid] = email

    def user_email(self, uid: str) -> str | None:
        return self.users.get(uid)


class CountingBudget(HashBudget):
    """A hashing budget that counts the hashes it let through (each costs 19 MiB and a core)."""

    def __init__(self) -> None:
        super().__init__(slots=4)
        self.hashes = 0

    def compute(self, work: Callable[[], _T]) -> _T:
        self.hashes += 1
        return super().compute(work)


def account_ports(*accounts: Account, apim: FakeApimUsers | None = None) -> AccountPorts:
    return AccountPorts(
        accounts=InMemoryAccounts(*accounts),
        links=InMemoryLinks(),
        throttles=InMemoryThrottles(),
        mailer=RecordingMailer(),
        apim=apim or FakeApimUsers(),  # type: ignore[arg-type]
        hashing=CountingBudget(),
        urls=PortalUrls("https://app.example", "https://portal.example"),
    )
