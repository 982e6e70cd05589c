"""Free loopback ports and readiness checks for local services."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


# Ports chosen here, to be bound later by another server, come from below the kernel's ephemeral range
# (Linux: 32768-60999): a server started meanwhile on port 0 (the emulators' own listeners) gets an
# ephemeral port, so it can never take one chosen here before its owner binds it.
_CHOSEN_RANGE = (20_000, 32_000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the ephemeral range."""
    for _ in range(200):
        port = random.randrange(*_CHOSEN_RANGE)  # noqa: S311 - spreading choices, not a secret
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue  # taken: try another
            return port
    raise OSError(f"no free port on {LOOPBACK} in {_CHOSEN_RANGE[0]}-{_CHOSEN_RANGE[1]} after 200 tries")


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
