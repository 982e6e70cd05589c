"""Table and queue access for the access area: links with insert-if-absent, and its two queues."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from billing import config
from billing.usage.batches import closing_message
from billing.usage.timing import CONFIRM_SETTING, LAG_SETTING, closing_takes_seconds, confirm_delay_of, lag_seconds_of


class ClosingUsageQueue:
    """Asks the usage area for a closing report through USAGE_BATCH_QUEUE, hidden for the report lag.

    Message (UTF-8 JSON, base64 on the queue as the Functions trigger expects):
    {"kind": "closing", "subscription_id": "sub_...", "period_start": <unix s>, "period_end": <unix s>}
    The consumer must be idempotent: a retried event can send the same message twice.
    The settings are read at each request, so a bad value fails the closing loudly, not every event.
    """

    def __init__(self, queue: QueueClient, env: Mapping[str, str] | None = None) -> None:
        self._queue = queue
        self._env = env

    def request_closing(self, subscription_id: str, period_start: int, period_end: int) -> None:
        # The usage area owns the message format (and consumes it with its queue trigger). Invisible
        # until APIM's reports have the period's last calls: `visibility_timeout` of Put Message.
        delay = lag_seconds_of(config.get(LAG_SETTING, self._env))
        self._queue.send_message(
            closing_message(subscription_id, period_start, period_end), visibility_timeout=delay, timeout=5
        )

    def closing_takes_seconds(self) -> int:
        lag = lag_seconds_of(config.get(LAG_SETTING, self._env))
        return closing_takes_seconds(lag, confirm_delay_of(config.get(CONFIRM_SETTING, self._env)))


class EventWorkQueue:
    def __init__(self, queue: QueueClient) -> None:
        self._queue = queue

    def defer(self, message: bytes) -> None:
        self._queue.send_message(message, timeout=5)


def ensure_queue(queue: QueueClient) -> QueueClient:
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    return queue
