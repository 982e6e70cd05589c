"""The cancellation's final invoice job on USAGE_BATCH_QUEUE, hidden for the report lag."""

from __future__ import annotations

from collections.abc import Mapping

from azure.storage.queue import QueueClient

from billing import config
from billing.usage.batches import final_message
from billing.usage.timing import LAG_SETTING, lag_seconds_of


class FinalInvoiceQueue:
    """`billing.portal.ports.FinalInvoicesPort`: one `final` message per cancel, consumed by the usage
    queue trigger (billing.usage.final_invoice), which is idempotent: a retried cancel may send two."""

    def __init__(self, queue: QueueClient, env: Mapping[str, str] | None = None) -> None:
        self._queue = queue
        self._env = env

    def schedule(self, subscription_id: str, period_start: int, period_end: int, cancel_at: int) -> None:
        # Read at each cancel: a bad setting fails the cancel (before APIM is touched), loudly.
        delay = lag_seconds_of(config.get(LAG_SETTING, self._env))
        self._queue.send_message(
            final_message(subscription_id, period_start, period_end, cancel_at), visibility_timeout=delay, timeout=5
        )
