"""Azurite, the Azure Storage emulator from npm, on free loopback ports."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devstack.ports import LOOPBACK, free_port, wait_for_port
from devstack.process import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(blob_port: int, queue_port: int, table_port: int) -> str:
    base = f"http://{LOOPBACK}"
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={base}:{blob_port}/{ACCOUNT_NAME};"
        f"QueueEndpoint={base}:{queue_port}/{ACCOUNT_NAME};"
        f"TableEndpoint={base}:{table_port}/{ACCOUNT_NAME};"
    )


@dataclass
class Azurite:
    """An Azurite process with in-memory storage; `stop()` leaves nothing behind."""

    blob_port: int = field(default_factory=free_port)
    queue_port: int = field(default_factory=free_port)
    table_port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="azurite-")))
    _process: ManagedProcess | None = None

    @property
    def pid(self) -> int | None:
        """The Azurite process, while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None else None

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    def start(self, timeout: float = 60.0) -> Azurite:
        if not AZURITE_BIN.exists():
            raise RuntimeError(f"Azurite is not installed at {AZURITE_BIN}: run `make setup` first")
        argv = [
            str(AZURITE_BIN),
            "--silent",
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--blobHost",
            LOOPBACK,
            "--blobPort",
            str(self.blob_port),
            "--queueHost",
            LOOPBACK,
            "--queuePort",
            str(self.queue_port),
            "--tableHost",
            LOOPBACK,
            "--tablePort",
            str(self.table_port),
        ]
        # In-memory persistence; the working directory only holds Azurite's own debug files and our log.
        self._process = ManagedProcess("azurite", argv, log_path=self.workdir / "azurite.log", cwd=self.workdir).start()
        try:
            for port in (self.blob_port, self.queue_port, self.table_port):
                wait_for_port(port, timeout=timeout, alive=self._process.running)
        except TimeoutError as exc:
            tail = self._process.log_tail()
            self.stop()
            raise RuntimeError(f"Azurite did not start: {exc}\n{tail}") from exc
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
