"""Benchmark (not a test): a flood of anonymous sign-ins against the app, and what it costs the host.

    .venv/bin/python -m bench.signin_flood_bench [--clients 32] [--seconds 20] [--kind signin|signup]

Starts the local stack (Azurite, the emulators, the mailbox and the app on the development host,
all but Azurite in this process) and, in a second process, `--clients` threads that each open the
delegated sign-in page once and then post sign-ins with random addresses and passwords as fast as
the app answers, each request from another loopback address (a botnet: the per-client limit never
trips, so the per-instance hashing budget is what protects the host). A third thread in that process
calls GET /api/health every 100 ms. `--kind signup` posts sign-ups instead, each with a password
whose strength check is as costly as a password can make it (about a second of CPU).

Printed: the answers by status and their rate, the p50/p95/max of /api/health during the flood,
and this process's memory before and at its peak (VmHWM), which holds the app, the emulators and
the mailbox.

Goal (issue 15): growth under 512 MiB and health p95 under 1 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devstack.consumer import browser_session, hidden_fields, portal_link  # noqa: E402
from devstack.stack import LocalStack, StackOptions  # noqa: E402


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


# ---- the load, in its own process ------------------------------------------------------------------
# A password whose strength check is costly (zxcvbn's l33t matcher): the worst a sign-up can send.
COSTLY_PASSWORD = "4@(<{[3!|1+70$5%2689" * 4


def flood(portal_url: str, app_url: str, clients: int, seconds: float, kind: str) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    health: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def attacker() -> None:
        session = browser_session()
        form = session.get(portal_link(session.get(portal_url + "/", timeout=30).text, kind), timeout=30)
        fields = hidden_fields(form.text)
        while time.monotonic() < deadline:
            sender = browser_session()  # another address for every attempt; the same cookies
            sender.cookies = session.cookies
            data = {**fields, "email": f"{uuid.uuid4().hex[:12]}@example.com", "password": uuid.uuid4().hex}
            if kind == "signup":
                data.update(password=COSTLY_PASSWORD, first_name="Flood", last_name="Bot")
            answer = sender.post(f"{app_url}/api/portal/{kind}", data=data, allow_redirects=False, timeout=60)
            sender.close()
            with lock:
                statuses[answer.status_code] += 1

    def prober() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                session.get(f"{app_url}/api/health", timeout=60)
                health.append(time.perf_counter() - started)
                time.sleep(0.1)  # a probe's pace, as a load balancer's health check

    threads = [threading.Thread(target=attacker) for _ in range(clients)] + [threading.Thread(target=prober)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    health.sort()
    return {
        "statuses": dict(statuses),
        "answers_per_second": sum(statuses.values()) / seconds,
        "health_p50": statistics.median(health),
        "health_p95": health[int(0.95 * (len(health) - 1))],
        "health_max": health[-1],
        "health_probes": len(health),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--kind",
        choices=("signin", "signup"),
        default="signin",
        help="sign-ins with random addresses, or sign-ups with a costly password",
    )
    parser.add_argument("--load", nargs=2, metavar=("PORTAL_URL", "APP_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(flood(args.load[0], args.load[1], args.clients, args.seconds, args.kind)))
        return 0

    options = StackOptions(use_func=False, stripe_webhooks=False, run_queue_workers=False)
    with LocalStack(options) as stack:
        # Warm up: every module loaded and the portal's dependencies built, as on a serving instance.
        consumer = stack.consumer()
        consumer.sign_up()
        requests.get(f"{stack.app_url}/api/health", timeout=30)
        before = memory_kib("VmRSS")
        started = time.monotonic()
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.signin_flood_bench",
                "--clients",
                str(args.clients),
                "--seconds",
                str(args.seconds),
                "--kind",
                args.kind,
                "--load",
                stack.apim_emulator.portal_url,
                stack.app_url,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.monotonic() - started
        peak = memory_kib("VmHWM")
        # The owner of an account still gets in after the flood.
        assert consumer.follow_sso(stack.consumer(consumer.email).sign_in_answer()) == consumer.user_id
    result = json.loads(load.stdout)
    print(
        f"{args.clients} anonymous clients sending {args.kind} for {args.seconds:.0f} s (load process ran "
        f"{elapsed:.1f} s)"
    )
    print(f"answers: {result['statuses']}  ({result['answers_per_second']:.1f}/s)")
    print(
        f"/api/health during the flood: p50 {result['health_p50'] * 1000:.0f} ms, "
        f"p95 {result['health_p95'] * 1000:.0f} ms, max {result['health_max'] * 1000:.0f} ms "
        f"({result['health_probes']} probes)"
    )
    print(
        f"memory of the app's process: {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB, "
        f"growth {(peak - before) / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
