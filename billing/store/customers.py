"""Which Stripe customer is each APIM user's: written when the app creates the customer.

customers: PartitionKey = APIM user id, RowKey = "customer"; `customer_id`. The app acts on a
customer it has just created, which Stripe's search may not show for a minute or more ("Don't use
search in read-after-write flows"), so it keeps the id instead of searching for it.
"""

from __future__ import annotations

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient

CUSTOMER_ROW = "customer"


class CustomerDirectory:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, uid: str) -> str | None:
        try:
            return str(self._table.get_entity(uid, CUSTOMER_ROW)["customer_id"])
        except ResourceNotFoundError:
            return None

    def keep(self, uid: str, customer_id: str) -> str:
        """Record the user's customer; the one recorded first wins (a concurrent creation loses)."""
        try:
            self._table.create_entity({"PartitionKey": uid, "RowKey": CUSTOMER_ROW, "customer_id": customer_id})
        except ResourceExistsError:
            found = self.get(uid)
            return found if found is not None else customer_id
        return customer_id
