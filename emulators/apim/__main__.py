"""`python -m emulators.apim --port PORT --gateway-port PORT [...]`: run the emulator until stopped."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from emulators.apim.faults import Faults
from emulators.apim.server import ApimEmulator
from emulators.apim.state import DEFAULT_PUBLISHER_EMAIL, DEFAULT_TIER, TIERS
from emulators.loganalytics.store import DEFAULT_INGESTION_DELAY_SECONDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.apim", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="management API (HTTPS) port; 0 picks a free one")
    parser.add_argument("--gateway-port", type=int, default=0, help="gateway port; 0 picks a free one")
    parser.add_argument("--portal-port", type=int, default=0, help="developer portal port; 0 picks a free one")
    parser.add_argument("--delegation-url", help="delegation endpoint of the app, e.g. http://127.0.0.1:7071/...")
    parser.add_argument("--delegation-key", help="delegation validation key, base64")
    parser.add_argument(
        "--publisher-email", default=DEFAULT_PUBLISHER_EMAIL, help="the administrator's e-mail (user 1)"
    )
    parser.add_argument("--tier", default=DEFAULT_TIER, choices=TIERS, help="pricing tier (sku.name)")
    parser.add_argument("--report-lag-seconds", type=float, default=0.0)
    parser.add_argument(
        "--log-analytics-port", type=int, default=0, help="Log Analytics query API (HTTPS) port; 0 picks a free one"
    )
    parser.add_argument(
        "--log-ingestion-delay-seconds",
        type=float,
        default=DEFAULT_INGESTION_DELAY_SECONDS,
        help="seconds before a gateway log row is queryable (default: the documented typical latency of resource logs)",
    )
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--error-rate-429", type=float, default=0.0)
    parser.add_argument("--error-rate-500", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            latency_ms=args.latency_ms, error_rate_429=args.error_rate_429, error_rate_500=args.error_rate_500
        )
        emulator = ApimEmulator(
            args.port,
            args.gateway_port,
            args.portal_port,
            delegation_url=args.delegation_url,
            delegation_key_b64=args.delegation_key,
            report_lag_seconds=args.report_lag_seconds,
            faults=faults,
            publisher_email=args.publisher_email,
            tier=args.tier,
            log_analytics_port=args.log_analytics_port,
            log_ingestion_delay_seconds=args.log_ingestion_delay_seconds,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(
        json.dumps(
            {
                "management_url": emulator.management_url,
                "gateway_url": emulator.gateway_url,
                "portal_url": emulator.portal_url,
                "log_analytics_endpoint": emulator.log_analytics_endpoint,
                "app_settings": emulator.app_settings(),
            },
            indent=2,
        ),
        flush=True,
    )
    stop.wait()
    emulator.stop()
    print("APIM emulator stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
