"""`python -m emulators.stripe --port PORT ...`: run the emulator until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import copy
import signal
import sys
import threading

from emulators.stripe.core import Config
from emulators.stripe.faults import FaultSettings
from emulators.stripe.resources import portal
from emulators.stripe.server import StripeEmulator


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulators.stripe", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--api-key", default="sk_test_emulator", help="the secret key clients must send")
    parser.add_argument("--webhook-url", help="deliver every event to this URL")
    parser.add_argument("--webhook-secret", help="signing secret for --webhook-url (whsec_...)")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--error-rate-429", type=_fraction, default=0.0)
    parser.add_argument("--error-rate-500", type=_fraction, default=0.0)
    parser.add_argument("--duplicate-webhooks", type=_fraction, default=0.0)
    parser.add_argument("--reorder-webhooks", action="store_true")
    parser.add_argument("--rate-limit", type=int, default=0, help="API requests per second; 0 = unlimited")
    parser.add_argument("--seed", type=int, help="seed for the random faults")
    parser.add_argument(
        "--after-retries",
        choices=("unpaid", "canceled"),
        default="unpaid",
        help="subscription status after the last failed payment retry",
    )
    parser.add_argument("--retry-days", default="3,5,7", help="days between failed payment retries")
    parser.add_argument("--webhook-retry-base", type=float, default=0.2, help="seconds before the first retry")
    parser.add_argument(
        "--portal-default",
        action="store_true",
        help="save the customer portal settings as the Dashboard does (a default configuration); "
        "without it, portal sessions need a `configuration`, as in a new Stripe account",
    )
    parser.add_argument(
        "--portal-cancel",
        choices=("at_period_end", "immediately"),
        help="save the portal settings (as --portal-default) with this cancellation mode",
    )
    parser.add_argument(
        "--search-lag-seconds",
        type=float,
        default=60.0,
        help="seconds before a write is visible to search (Stripe: under a minute)",
    )
    parser.add_argument(
        "--meter-error-window-seconds",
        type=float,
        default=10.0,
        help="window over which invalid v2 stream events are batched into one error report",
    )
    parser.add_argument("--verbose", action="store_true", help="log each request line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.webhook_secret and not args.webhook_url:
        print("--webhook-secret needs --webhook-url", file=sys.stderr)
        return 2
    try:
        retry_days = tuple(int(x) for x in args.retry_days.split(",") if x.strip())
    except ValueError:
        print(f"--retry-days must be comma-separated whole days, e.g. 3,5,7 (got {args.retry_days!r})", file=sys.stderr)
        return 2
    faults = FaultSettings(
        latency_ms=args.latency_ms,
        error_rate_429=args.error_rate_429,
        error_rate_500=args.error_rate_500,
        duplicate_webhooks=args.duplicate_webhooks,
        reorder_webhooks=args.reorder_webhooks,
        rate_limit=args.rate_limit,
        seed=args.seed,
    )
    portal_settings = None
    if args.portal_default or args.portal_cancel:
        portal_settings = copy.deepcopy(portal.DASHBOARD_DEFAULTS)
        if args.portal_cancel:
            portal_settings["features"]["subscription_cancel"]["mode"] = args.portal_cancel
    if args.search_lag_seconds < 0 or args.meter_error_window_seconds < 0:
        print("--search-lag-seconds and --meter-error-window-seconds must be >= 0", file=sys.stderr)
        return 2
    config = Config(
        retry_days=retry_days,
        after_retries=args.after_retries,
        webhook_retry_base=args.webhook_retry_base,
        portal_settings=portal_settings,
        search_lag_seconds=args.search_lag_seconds,
        meter_error_window_seconds=args.meter_error_window_seconds,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emulator = StripeEmulator(
        port=args.port,
        api_key=args.api_key,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        faults=faults,
        config=config,
        verbose=args.verbose,
    )
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Stripe emulator listening on {emulator.base_url}", flush=True)
    stop.wait()
    emulator.stop()
    print("Stripe emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
