"""Links sent by e-mail (address confirmation, password reset), kept under the hash of their token.

emailtokens: PartitionKey = sha256(token), RowKey = "link". The token itself is only in the mail,
so a copy of the table opens no account. Rows carry `expires_at` for a clean-up to go by.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, fields
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from billing.portal.records import EmailLink

LINK_ROW = "link"
_FIELDS = {f.name for f in fields(EmailLink)}


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class EmailLinks:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def create(self, token: str, link: EmailLink) -> None:
        self._table.create_entity({"PartitionKey": token_key(token), "RowKey": LINK_ROW, **asdict(link)})

    def get(self, token: str) -> tuple[EmailLink, str] | None:
        if not token or len(token) > 100:
            return None
        try:
            entity = self._table.get_entity(token_key(token), LINK_ROW)
        except ResourceNotFoundError:
            return None
        link = EmailLink(**{k: v for k, v in dict(entity).items() if k in _FIELDS})
        return link, str(entity.metadata["etag"])

    def replace(self, token: str, link: EmailLink, etag: str) -> bool:
        """Write the link if nobody changed it since it was read with `etag`; False otherwise."""
        entity: dict[str, Any] = {"PartitionKey": token_key(token), "RowKey": LINK_ROW, **asdict(link)}
        try:
            self._table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True
