"""The local queue poller: a bad usage message ends in the poison queue after 5 attempts, with the reason."""

from __future__ import annotations

import contextlib
import time

import pytest
from azure.core.exceptions import ResourceExistsError

from billing.adapters.storage import queue
from billing.store.tables import USAGE_BATCH_QUEUE
from devhost.queues import QueuePoller
from devstack.azurite import Azurite

pytestmark = pytest.mark.storage


def test_poison_message_moves_to_the_poison_queue(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    import function_app  # noqa: PLC0415

    q = queue(USAGE_BATCH_QUEUE)
    poison = queue(USAGE_BATCH_QUEUE + "-poison")
    for client in (q, poison):
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        client.clear_messages()
    q.send_message(b'{"kind": "nonsense"}')
    poller = QueuePoller(function_app.app, {USAGE_BATCH_QUEUE: q}, visibility_timeout=1)
    deadline = time.monotonic() + 30
    attempts = 0
    while q.get_queue_properties().approximate_message_count and time.monotonic() < deadline:
        attempts += poller.poll_once()  # a failed message reappears after its 1 s visibility timeout
    assert attempts == 5
    (moved,) = list(poison.receive_messages())
    assert moved.content == b'{"kind": "nonsense"}'
    assert "'kind' must be" in caplog.text
