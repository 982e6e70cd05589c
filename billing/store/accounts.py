"""Consumer accounts for delegated sign-up and sign-in, and the salts of used delegation links.

accounts: PartitionKey = sha256(normalised email), RowKey = "account" (emails may hold characters
that Table keys forbid, and the hash keeps the address out of the key). Password hashes only.
delegationsalts: PartitionKey = sha256(salt), RowKey = "used": the salts of delegation links that
already started a session, so a replayed (leaked) link starts none.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, fields
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from billing.portal.records import Account, AccountExistsError, normalise_email

ACCOUNT_ROW = "account"
SALT_ROW = "used"


def email_key(email: str) -> str:
    return hashlib.sha256(normalise_email(email).encode("utf-8")).hexdigest()


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
            self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
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
        entity = {
            "PartitionKey": key,
            "RowKey": SALT_ROW,
            "uid": uid,
            "used_at": now,
            "expires_at": now + retention_seconds,
        }
        try:
            self._table.create_entity(entity)
        except ResourceExistsError:
            return False
        return True
