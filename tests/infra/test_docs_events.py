"""docs/deploy.md subscribes the webhook endpoint to exactly the events the app acts on."""

from __future__ import annotations

import re
from pathlib import Path

from billing.access.routing import HANDLED_EVENTS

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def test_the_documented_webhook_events_are_the_handled_ones() -> None:
    text = DEPLOY.read_text(encoding="utf-8")
    section = text.split("### Webhook endpoint", 1)[1].split("Or with the Stripe CLI", 1)[0]
    listed = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", section))
    handled = set(HANDLED_EVENTS)
    assert listed == handled, f"missing {handled - listed}, extra {listed - handled}"
