"""`python -m devstack`: the local stack kept up for a person to click through (what `make run` does).

Starts Azurite, the Stripe and APIM emulators and the Functions app (on http://127.0.0.1:7071,
through `func start` when Azure Functions Core Tools are installed, else the development host),
applies the catalog when the catalog sync is available, prints the URLs, and stops everything on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType

from billing.cli import main as billing_main
from devstack.stack import LocalStack, StackOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7071, help="port of the Functions app (default 7071)")
    parser.add_argument("--no-catalog", action="store_true", help="do not apply the catalog at start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("Starting the local stack (Azurite, Stripe emulator, APIM emulator, mailbox, Functions app)...", flush=True)
    with LocalStack(StackOptions(app_port=args.port)) as stack:
        if not args.no_catalog:
            apply_catalog()
        print("\nThe local stack is up:")
        for name, url in stack.urls().items():
            print(f"  {name:<34} {url}")
        print(
            f"  {'Operator status (another terminal)':<34} . {stack.settings_file()} && "
            f"{os.path.relpath(sys.executable)} -m billing status"
        )
        print("\nOpen the developer portal, sign up and subscribe. Ctrl-C stops everything.", flush=True)
        stopping.wait()
        print("\nStopping...", flush=True)
    print("Stopped.")
    return 0


def apply_catalog() -> None:
    print("Applying the catalog from payment/monetizationModels.json:", flush=True)
    if billing_main(["catalog", "apply"]) != 0:
        print("  (catalog apply failed; see above)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
