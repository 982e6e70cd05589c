"""How often each account, browser, client and address may do what costs the app or its users.

Each limit is a fixed window counted in Table Storage by an atomic claim (`ThrottlePort.take`):
a use is claimed before the work is done, so requests sent at the same moment can never all pass.
Pure code: the limits, the keys and the port.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from billing.portal.records import normalise_email


@dataclass(frozen=True)
class Limit:
    uses: int
    window_seconds: int


# Password checks of one account from browsers without its device cookie (OWASP: lockout per
# account), and of one device cookie (a stolen cookie cannot guess without bound either).
GUESSES_PER_ACCOUNT = Limit(5, 15 * 60)
GUESSES_PER_DEVICE = Limit(5, 15 * 60)
# And of all device cookies of one account together: whoever once knew the password and kept many
# cookies cannot multiply the allowance.
GUESSES_PER_ACCOUNT_FROM_DEVICES = Limit(20, 15 * 60)
# Sign-ins from one client address, across accounts (credential stuffing from one host).
SIGN_INS_PER_CLIENT = Limit(30, 15 * 60)
# Sign-ups and reset requests from one client address: each sends a mail and stores a link.
MAIL_REQUESTS_PER_CLIENT = Limit(10, 60 * 60)
# Mails to one address: nobody can use the app to flood someone's mailbox.
MAILS_PER_ADDRESS = Limit(3, 60 * 60)
# Passwords entered on one confirmation link (its lifetime is the window).
PASSWORDS_PER_LINK = Limit(5, 24 * 3600)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:40]


def account_key(email: str) -> str:
    return "account:" + _digest(normalise_email(email))


def account_devices_key(email: str) -> str:
    return "account-devices:" + _digest(normalise_email(email))


def device_key(nonce: str) -> str:
    return "device:" + _digest(nonce)


def client_key(action: str, client: str) -> str:
    return f"client-{action}:" + _digest(client)


def link_key(token: str) -> str:
    return "link:" + _digest(token)


def mailbox_key(email: str) -> str:
    return "mails:" + _digest(normalise_email(email))


class ThrottlePort(Protocol):
    def take(self, key: str, limit: Limit, now: int) -> int:
        """Claim one use of `key` in its current window: 0 if claimed, else seconds until it reopens."""
        ...

    def clear(self, key: str) -> None:
        """Forget the key's window (after a correct password, its failures no longer count)."""
        ...
