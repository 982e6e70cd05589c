"""Table and queue access for the access area: links with insert-if-absent, and its two queues."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from billing.usage.batches import closing_message


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
