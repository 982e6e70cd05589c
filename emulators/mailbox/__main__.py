"""`python -m emulators.mailbox [--smtp-port N] [--web-port N]`: run the mailbox until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from emulators.mailbox.server import DEFAULT_MAX_MESSAGES, Mailbox


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulators.mailbox", description=__doc__)
    parser.add_argument("--smtp-port", type=int, default=0, help="SMTP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--web-port", type=int, default=0, help="web page port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--user", help="require SMTP AUTH with this user name (needs --password)")
    parser.add_argument("--password", help="the SMTP AUTH password (local use only: it is visible in ps)")
    parser.add_argument("--max-messages", type=int, default=DEFAULT_MAX_MESSAGES, help="keep only the newest N")
    parser.add_argument("--verbose", action="store_true", help="log each web request")
    args = parser.parse_args(argv)
    if bool(args.user) != bool(args.password):
        parser.error("--user and --password go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        mailbox = Mailbox(
            args.smtp_port,
            args.web_port,
            auth=(args.user, args.password) if args.user else None,
            max_messages=args.max_messages,
            verbose=args.verbose,
        )
    except ValueError as exc:
        print(f"python -m emulators.mailbox: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        mailbox.start()
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(
        f"Mailbox SMTP server on {mailbox.smtp_host}:{mailbox.smtp_port}{' (AUTH required)' if args.user else ''}",
        flush=True,
    )
    print(f"Mailbox web page on {mailbox.web_url}/", flush=True)
    stop.wait()
    mailbox.stop()
    print("Mailbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
