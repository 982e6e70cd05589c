"""Outbound calls give up on a peer that accepts the connection and never answers, instead of holding
an instance for the SDKs' defaults (80 s for Stripe, 300 s per read for azure-core): the clients the
app builds carry read timeouts. The timeouts are shortened here so the test is quick; the bound on the
wait is only there so that a missing timeout fails the test instead of hanging it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import stripe
from azure.core.exceptions import ServiceResponseError

from billing.adapters import storage, stripe_client

BOUND_SECONDS = 20  # far above the shortened timeouts with their retries, far below the SDK defaults


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never writes a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def _outcome(call: Callable[[], object]) -> BaseException | None:
    """What `call` raised, waiting at most BOUND_SECONDS; fails if it is still waiting then."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND_SECONDS)
    assert not thread.is_alive(), "the call was still waiting: no read timeout"
    return raised[0] if raised else None


def test_a_stripe_call_to_a_silent_peer_times_out(silent_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe_client, "READ_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(stripe_client, "MAX_NETWORK_RETRIES", 1)
    client = stripe_client.stripe_client(
        {"STRIPE_API_KEY": "sk_test_x", "STRIPE_API_BASE": f"http://127.0.0.1:{silent_server}"}
    )
    error = _outcome(client.v1.customers.list)
    assert isinstance(error, stripe.APIConnectionError)


def test_a_table_storage_call_to_a_silent_peer_times_out(silent_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "READ_TIMEOUT_SECONDS", 0.5)
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"TableEndpoint=http://127.0.0.1:{silent_server}/devstoreaccount1;"
    )
    tables = storage.table_service({"AzureWebJobsStorage": conn})
    error = _outcome(lambda: list(tables.list_tables(retry_total=0)))
    assert isinstance(error, ServiceResponseError)
