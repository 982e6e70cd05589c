"""A local queue poller that runs queue-triggered functions as the Functions host does.

Receive a message, invoke the function, delete it on success; after `max_dequeue_count` failed
attempts (host.json: 5) move it to `<queue>-poison` and log the reason. Development only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import azure.functions as func
from azure.storage.queue import QueueClient

from devhost.indexing import indexed_functions
from devhost.triggers import _await

log = logging.getLogger("devhost.queues")
MAX_DEQUEUE_COUNT = 5


class QueuePoller:
    def __init__(
        self,
        app: func.FunctionApp,
        queues: dict[str, QueueClient],
        *,
        interval: float = 0.5,
        visibility_timeout: int = 30,
        max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    ) -> None:
        """`queues`: queue name -> client (with the app's base64 policies) for each queue to poll."""
        self._handlers: dict[str, Any] = {}
        for function in indexed_functions(app):
            trigger = function.get_trigger()
            if trigger.type == "queueTrigger" and getattr(trigger, "queue_name", None) in queues:
                self._handlers[trigger.queue_name] = (trigger.name, function.get_user_function())
        self._queues = queues
        self._interval = interval
        self._visibility = visibility_timeout
        self._max = max_dequeue_count
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> int:
        """Process every visible message once; returns how many were handled (succeeded or not)."""
        handled = 0
        for name, (arg_name, handler) in self._handlers.items():
            client = self._queues[name]
            for message in client.receive_messages(visibility_timeout=self._visibility):
                handled += 1
                body = message.content if isinstance(message.content, bytes) else str(message.content).encode()
                msg = func.QueueMessage(id=message.id, body=body)
                try:
                    result = handler(**{arg_name: msg})
                    if hasattr(result, "__await__"):
                        import asyncio  # noqa: PLC0415

                        asyncio.run(_await(result))
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if (message.dequeue_count or 0) >= self._max:
                        self._to_poison(name, body, reason)
                        client.delete_message(message)
                    else:
                        log.warning(
                            "queue %s: message %s failed (attempt %s): %s",
                            name,
                            message.id,
                            message.dequeue_count,
                            reason,
                        )
                    continue
                client.delete_message(message)
        return handled

    def _to_poison(self, name: str, body: bytes, reason: str) -> None:
        from azure.core.exceptions import ResourceExistsError  # noqa: PLC0415

        from billing.adapters.storage import queue  # noqa: PLC0415 - the app's queue settings

        poison = queue(f"{name}-poison")
        with contextlib.suppress(ResourceExistsError):
            poison.create_queue()
        poison.send_message(body)
        log.error("queue %s: message moved to %s-poison after %d attempts: %s", name, name, self._max, reason)

    def start(self) -> QueuePoller:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    if not self.poll_once():
                        self._stop.wait(self._interval)
                except Exception:
                    log.exception("queue poller error")
                    self._stop.wait(self._interval)

        self._thread = threading.Thread(target=run, name="devhost-queues", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> QueuePoller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
