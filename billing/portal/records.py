"""The records that the account services and their stores exchange. Pure data, no SDK."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CONFIRM = "confirm"  # a sign-up (or an account from before confirmation existed) waiting for its address
RESET = "reset"  # a password reset
LINK_PURPOSES = (CONFIRM, RESET)


class AccountExistsError(Exception):
    """An account with this address exists already (also when a concurrent sign-up made it)."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def credential_tag(email: str, password_hash: str) -> str:
    """Names an account's current credentials: device cookies and reset links made under them stop
    working once the password changes (reset, change, or a rehash at sign-in)."""
    material = f"{normalise_email(email)}\n{password_hash}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


@dataclass(frozen=True)
class DeviceToken:
    """A genuine, unexpired device cookie: the credentials it was issued under, and its nonce."""

    credential: str
    nonce: str


@dataclass(frozen=True)
class Account:
    email: str
    password_hash: str
    apim_user_id: str
    first_name: str
    last_name: str
    created_at: int  # unix seconds
    closing_since: int = 0  # unix seconds when closing began (0: open); sign-in refuses a closing account
    # Unix seconds when the owner proved the address by a link sent to it; 0 for an account made
    # before confirmation existed, which must confirm at its next sign-in before it is used.
    confirmed_at: int = 0


@dataclass(frozen=True)
class EmailLink:
    """What a link sent by e-mail stands for; stored under the hash of its secret token.

    CONFIRM carries the password hash chosen at sign-up (or the account's, for an older account):
    the person who opens the link must enter that password, so whoever signed up with someone
    else's address cannot have the owner confirm an account whose password the signer knows.
    """

    purpose: str  # CONFIRM or RESET
    email: str
    created_at: int
    expires_at: int
    password_hash: str = ""
    first_name: str = ""
    last_name: str = ""
    return_url: str = "/"
    used_at: int = 0  # set once, when the link did what it stands for
    credential: str = ""  # RESET: the account's credential_tag when the link was made

    def usable(self, now: int) -> bool:
        return not self.used_at and now < self.expires_at
