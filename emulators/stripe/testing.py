"""Test helpers: a loopback webhook receiver that records (and optionally refuses) deliveries."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    body: bytes
    signature: str
    event: dict[str, Any] = field(default_factory=dict)


class WebhookSink:
    """Collects POSTed webhook deliveries on 127.0.0.1; `fail_next` makes the next N answer 500."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_next = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    failing = sink.fail_next > 0
                    if failing:
                        sink.fail_next -= 1
                    else:
                        sink.received.append(Received(body, self.headers.get("Stripe-Signature", ""), json.loads(body)))
                status = 500 if failing else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def types(self) -> list[str]:
        with self._lock:
            return [r.event["type"] for r in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise TimeoutError(f"only {len(self.received)} of {count} webhook deliveries arrived in {timeout}s")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
