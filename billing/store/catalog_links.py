"""The product links (to APIs and groups) that the catalog made itself, so that it removes only those.

cataloglinks: PartitionKey = APIM product id, RowKey = "api~<api id>" or "group~<group id>". A
row exists while the link made by `catalog apply` should exist; links the provider made in APIM
have no row and are never removed by the catalog.
"""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode


class CatalogLinks:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def made(self, product_id: str) -> set[tuple[str, str]]:
        """(kind, target id) of the links the catalog made for the product."""
        rows = self._table.query_entities("PartitionKey eq @p", parameters={"p": product_id}, select=["RowKey"])
        return {tuple(str(r["RowKey"]).split("~", 1)) for r in rows}  # type: ignore[misc]

    def record(self, product_id: str, kind: str, target_id: str, linked: bool) -> None:
        row = f"{kind}~{target_id}"
        if linked:
            self._table.upsert_entity({"PartitionKey": product_id, "RowKey": row}, mode=UpdateMode.REPLACE)
        else:
            with contextlib.suppress(ResourceNotFoundError):
                self._table.delete_entity(product_id, row)
