"""Plans shown to people: one section per service, one line per action, indented details."""

from __future__ import annotations

from billing.catalog.plan import Action, Plan, Service

NOTHING_TO_CHANGE = "nothing to change"
_SYMBOL = {"create": "+", "update": "~", "archive": "-", "remove": "-"}


def action_line(action: Action) -> str:
    return f"{_SYMBOL[action.change.value]} {action.change.value:<8}{action.kind:<8}{action.target}"


def render_plan(plan: Plan, services: tuple[Service, ...]) -> str:
    lines: list[str] = []
    for service in services:
        actions = plan.for_service(service)
        title = {
            "stripe": "Stripe (products, meters, prices, customer portal)",
            "apim": "API Management (products, policies, API and group links)",
        }
        lines.append(f"{title[service.value]}:")
        if not actions:
            lines.append(f"  {NOTHING_TO_CHANGE}")
        for action in actions:
            lines.append("  " + action_line(action))
            lines += [f"      {detail}" for detail in action.details]
    for notice in plan.notices:
        lines.append(f"note: {notice}")
    for problem in plan.problems:
        lines.append(f"problem: {problem}")
    counts = {c: sum(1 for a in plan.actions if a.change.value == c) for c in _SYMBOL}
    if plan.empty:
        lines.append(f"Plan: {NOTHING_TO_CHANGE}.")
    else:
        totals = (
            f"{counts['create']} to create, {counts['update']} to update, {counts['archive']} to archive, "
            f"{counts['remove']} to remove"
        )
        lines.append(f"Plan: {totals}.")
    return "\n".join(lines)
