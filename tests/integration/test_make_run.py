"""`make run` (python -m devstack): the whole stack up for a person, and nothing left after SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import requests

from devstack.ports import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.storage


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_output(log: IO[str], marker: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log.seek(0)
        text = log.read()
        if marker in text or proc.poll() is not None or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_stack_serves_the_portal_with_the_catalog_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "run.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--port", str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, timeout=60, alive=lambda: proc.poll() is None)
        assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=10).json()["status"] == "ok"
        text = _wait_for_output(log, "Ctrl-C stops everything", proc)
        portal = re.search(r"Developer portal \(APIM emulator\)\s+(\S+)", text)
        assert portal, text
        page = requests.get(portal[1], timeout=10).text
        for product in ("free", "developer", "payg", "basic", "standard", "pro", "enterprise"):
            assert f'data-product-id="{product}"' in page
        # Where a person reads the mails the app sends (confirmation and reset links).
        mailbox = re.search(r"Mailbox \(mails the app sent\)\s+(\S+)", text)
        assert mailbox, text
        assert "Mailbox" in requests.get(mailbox[1], timeout=10).text
        mailbox_port = int(mailbox[1].rsplit(":", 1)[1])
        # Where the operator's status is: a command that runs against this stack, every part readable.
        command = re.search(r"Operator status \(another terminal\)\s+(.+)", text)
        assert command, text
        status = subprocess.run(
            ["sh", "-c", command[1]], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )
        assert status.returncode in (0, 1), status.stderr  # 1: something needs attention (a fresh stack may)
        assert "Usage" in status.stdout
        assert "every required setting is set" in status.stdout, status.stdout
        assert "could not be read" not in status.stdout, status.stdout
        ready = requests.get(f"http://127.0.0.1:{port}/api/health", params={"ready": "1"}, timeout=30).json()
        assert ready["ready"] is True, ready
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert not _listening(port)
    assert not _listening(mailbox_port)
