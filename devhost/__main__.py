"""`python -m devhost`: serve function_app.app on http://127.0.0.1:7071 (what `func start` uses)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from devhost.server import DevHost


def load_local_settings(path: Path) -> None:
    """Like `func start`: values from local.settings.json become environment variables (env wins)."""
    if not path.exists():
        return
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_local_settings(args.settings)
    module_name, _, attribute = args.app.partition(":")
    sys.path.insert(0, os.getcwd())
    app = getattr(importlib.import_module(module_name), attribute or "app")
    host = DevHost(app, port=args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"Development host (not for production) serving {args.app} on {host.base_url}/api", flush=True)
    for route in host.routes:
        methods = ",".join(sorted(route.methods)) or "ANY"
        print(f"  {route.name}: [{methods}] {host.base_url}/api/{route.template.template}", flush=True)
    try:
        host.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        host._server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
