"""`python -m demo` (what `make demo` runs): the whole product, end to end, on the local stack."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from demo.report import render_terminal, write_html
from demo.scenario import FULL_PLAN, SMALL_PLAN, DemoError, demo_models_file, run_demo
from devstack.stack import LocalStack, StackOptions
from emulators.apim.state import DEFAULT_TIER, TIERS

OUTPUT = Path(__file__).resolve().parent.parent / "demo-output" / "report.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer calls (what the test runs)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"HTML report (default {OUTPUT})")
    parser.add_argument(
        "--apim-tier",
        choices=TIERS,
        default=DEFAULT_TIER,
        help=f"the emulated API Management tier (default {DEFAULT_TIER}; the v2 tiers have no "
        "Reports API: usage comes from the gateway logs on every tier)",
    )
    args = parser.parse_args(argv)
    print("Starting the local stack: Azurite, the Stripe emulator, the APIM emulator, the Functions app...")
    try:
        with (
            tempfile.TemporaryDirectory() as workdir,
            LocalStack(
                StackOptions(
                    run_queue_workers=False, apim_tier=args.apim_tier, models_file=demo_models_file(Path(workdir))
                )
            ) as stack,
        ):
            print(
                f"  Functions app at {stack.app_url}, developer portal at {stack.apim.portal_url if stack.apim else ''}"
            )
            results = run_demo(stack, SMALL_PLAN if args.small else FULL_PLAN)
    except DemoError as exc:
        print(f"\nThe demo stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted; everything was stopped.", file=sys.stderr)
        return 130
    print()
    print(render_terminal(results))
    path = write_html(results, args.output)
    print(f"\nReport with a chart of usage and revenue per product: {path}")
    print("Everything started for the demo has been stopped. `make run` keeps the stack up to click through.")
    return 0 if all(r.agrees for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
