"""Consumer accounts for delegated sign-up and sign-in, and their recent failed logins.

accounts: PartitionKey = sha256(normalised email), RowKey = "account" (emails may hold characters
that Table keys forbid, and the hash keeps the address out of the key). Password hashes only.
loginattempts: the same key, RowKey = "window": failures in the current window, written with
ETags so that concurrent failures from several instances are all counted.
delegationsalts: PartitionKey = sha256(salt), RowKey = "used": the salts of delegation links that
already started a session, so a replayed (leaked) link starts none.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

ACCOUNT_ROW = "account"
WINDOW_ROW = "window"
SALT_ROW = "used"
# TODO(tables): belongs in billing/store/tables.py (ALL_TABLES) for the deployment to create it;
# the portal creates it at start-up with ensure_table meanwhile.


class AccountExistsError(Exception):
    pass


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_key(email: str) -> str:
    return hashlib.sha256(normalise_email(email).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Account:
    email: str
    password_hash: str
    apim_user_id: str
    first_name: str
    last_name: str
    created_at: int  # unix seconds
    closing_since: int = 0  # unix seconds when closing began (0: open); sign-in refuses a closing account


_ACCOUNT_FIELDS = {f.name for f in fields(Account)}


def _account(entity: Any) -> Account:
    return Account(**{k: v for k, v in dict(entity).items() if k in _ACCOUNT_FIELDS})


class Accounts:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, email: str) -> Account | None:
        found = self.get_with_etag(email)
        return found[0] if found else None

    def get_with_etag(self, email: str) -> tuple[Account, str] | None:
        try:
            entity = self._table.get_entity(email_key(email), ACCOUNT_ROW)
        except ResourceNotFoundError:
            return None
        return _account(entity), str(entity.metadata["etag"])

    def replace(self, account: Account, etag: str) -> bool:
        """Write the account if nobody changed it since it was read with `etag`; False otherwise."""
        entity: dict[str, Any] = {"PartitionKey": email_key(account.email), "RowKey": ACCOUNT_ROW, **asdict(account)}
        try:
            self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                      match_condition=MatchConditions.IfNotModified)  # fmt: skip
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def delete(self, email: str) -> None:
        """Remove the account row; nothing happens if it is gone already (a retried close)."""
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(email_key(email), ACCOUNT_ROW)

    def create(self, account: Account) -> None:
        """Insert; AccountExistsError if the address is taken (even by a concurrent sign-up)."""
        entity: dict[str, Any] = {"PartitionKey": email_key(account.email), "RowKey": ACCOUNT_ROW, **asdict(account)}
        try:
            self._table.create_entity(entity)
        except ResourceExistsError as exc:
            raise AccountExistsError(account.email) from exc


@dataclass(frozen=True)
class FailureWindow:
    window_start: int  # unix seconds of the first failure of the window
    failures: int


class LoginAttempts:
    """Failed sign-ins per account, counted in a fixed window that starts at the first failure."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def current(self, email: str) -> FailureWindow | None:
        found = self._read(email)
        return found[0] if found else None

    def record_failure(self, email: str, now: int, window_seconds: int) -> FailureWindow:
        key = email_key(email)
        for _ in range(10):  # optimistic concurrency: retry when another instance wrote first
            found = self._read(email)
            if found is None:
                window = FailureWindow(now, 1)
                try:
                    self._table.create_entity({"PartitionKey": key, "RowKey": WINDOW_ROW, **asdict(window)})
                except ResourceExistsError:
                    continue
                return window
            old, etag = found
            window = (
                FailureWindow(now, 1)
                if now - old.window_start >= window_seconds
                else FailureWindow(old.window_start, old.failures + 1)
            )
            try:
                self._table.update_entity(
                    {"PartitionKey": key, "RowKey": WINDOW_ROW, **asdict(window)},
                    mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified,
                )  # fmt: skip
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
            return window
        raise RuntimeError("could not record a failed sign-in: too much contention on one account")

    def reset(self, email: str) -> None:
        self._table.delete_entity(email_key(email), WINDOW_ROW)

    def _read(self, email: str) -> tuple[FailureWindow, str] | None:
        try:
            entity = self._table.get_entity(email_key(email), WINDOW_ROW)
        except ResourceNotFoundError:
            return None
        window = FailureWindow(int(entity["window_start"]), int(entity["failures"]))
        return window, str(entity.metadata["etag"])


class UsedSalts:
    """Salts of delegation links that were used once: inserting one twice fails, so each link works once.

    Rows carry `expires_at` so that a clean-up may drop them; a dropped salt could be replayed, so the
    retention must be longer than anyone keeps a link (APIM's links carry no time of their own).
    """

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def claim(self, salt: str, uid: str, now: int, retention_seconds: int) -> bool:
        """True the first time `salt` is claimed; False for every later claim (a replay)."""
        key = hashlib.sha256(salt.encode("utf-8")).hexdigest()
        entity = {"PartitionKey": key, "RowKey": SALT_ROW, "uid": uid, "used_at": now,
                  "expires_at": now + retention_seconds}  # fmt: skip
        try:
            self._table.create_entity(entity)
        except ResourceExistsError:
            return False
        return True
