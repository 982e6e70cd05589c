"""Free loopback ports and readiness checks for local services."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    *,
    timeout: float = 30.0,
    host: str = LOOPBACK,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError.

    `alive` lets the caller stop waiting as soon as the process that should listen has died.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise TimeoutError(f"the process meant to listen on {host}:{port} exited")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)
