"""Table and queue access for the access area: links with insert-if-absent, and its two queues."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from billing.store.subscriptions import SubscriptionLink, SubscriptionLinks, _to_entity
from billing.usage.batches import closing_message


class AccessLinks(SubscriptionLinks):
    """The subscription links, with the two conditional writes the sync service needs as booleans.

    TODO(store): `create_if_absent` belongs in billing/store/subscriptions.py (asked in the report).
    """

    def __init__(self, table: TableClient) -> None:
        super().__init__(table)
        self._links_table = table

    def create_if_absent(self, link: SubscriptionLink) -> bool:
        try:
            self._links_table.create_entity(_to_entity(link))
        except ResourceExistsError:
            return False
        return True

    def replace_if_unchanged(self, link: SubscriptionLink, etag: str) -> bool:  # type: ignore[override]
        try:
            super().replace_if_unchanged(link, etag)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True


class ClosingUsageQueue:
    """Asks the usage area for a closing report through USAGE_BATCH_QUEUE.

    Message (UTF-8 JSON, base64 on the queue as the Functions trigger expects):
    {"kind": "closing", "subscription_id": "sub_...", "period_start": <unix s>, "period_end": <unix s>}
    The consumer must be idempotent: a retried event can send the same message twice.
    """

    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def request_closing(self, subscription_id: str, period_start: int, period_end: int) -> None:
        # The usage area owns the message format (and consumes it with its queue trigger).
        self._queue.send_message(closing_message(subscription_id, period_start, period_end), timeout=5)


class EventWorkQueue:
    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def defer(self, message: bytes) -> None:
        self._queue.send_message(message, timeout=5)


def ensure_queue(queue: QueueClient) -> QueueClient:
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    return queue
