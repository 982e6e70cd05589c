"""The demo's closing report: per consumer, Stripe's invoice beside the pricing engine's quote.

Rendered for the terminal and as a self-contained HTML page with an SVG chart of usage and
revenue per product (an image embedded in the page, no external assets).
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from billing.pricing import format_minor


@dataclass(frozen=True)
class Line:
    description: str
    amount: int  # minor units


@dataclass
class ConsumerResult:
    consumer: str
    product_id: str
    successful_calls: int
    blocked_calls: int
    invoice_lines: list[Line]  # Stripe's invoice lines for the period's usage and flat fee
    quote_lines: list[Line]  # billing.pricing.quote for the same successful calls
    currency: str = "usd"
    notes: list[str] = field(default_factory=list)

    @property
    def invoice_total(self) -> int:
        return sum(line.amount for line in self.invoice_lines)

    @property
    def quote_total(self) -> int:
        return sum(line.amount for line in self.quote_lines)

    @property
    def agrees(self) -> bool:
        return self.invoice_total == self.quote_total


def money(amount: int, currency: str = "usd") -> str:
    return format_minor(amount, currency, 2 if currency != "jpy" else 0)


def render_terminal(results: list[ConsumerResult]) -> str:
    header = (
        f"{'consumer':<22} {'product':<11} {'successful':>11} {'blocked':>8} {'invoiced':>13} {'quoted':>13}  agree"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        mark = "yes" if r.agrees else "NO"
        rows.append(
            f"{r.consumer:<22} {r.product_id:<11} {r.successful_calls:>11,} {r.blocked_calls:>8,} "
            f"{money(r.invoice_total, r.currency):>13} {money(r.quote_total, r.currency):>13}  {mark}"
        )
        rows.extend(f"{'':<22} - {note}" for note in r.notes)
    agreed = sum(r.agrees for r in results)
    rows.append("")
    rows.append(f"{agreed} of {len(results)} consumers invoiced exactly what the pricing engine quoted.")
    return "\n".join(rows)


def per_product(results: list[ConsumerResult]) -> dict[str, tuple[int, int]]:
    """product -> (successful calls, invoiced revenue in minor units)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in results:
        totals[r.product_id][0] += r.successful_calls
        totals[r.product_id][1] += r.invoice_total
    return {product: (calls, revenue) for product, (calls, revenue) in totals.items()}


def render_chart_svg(results: list[ConsumerResult], width: int = 720, height: int = 320) -> str:
    """Two bars per product: calls (left axis) and revenue (right axis), each scaled to its maximum."""
    data = per_product(results)
    products = list(data)
    max_calls = max((c for c, _ in data.values()), default=0) or 1
    max_revenue = max((r for _, r in data.values()), default=0) or 1
    top, bottom, left, right = 44, 50, 20, 20
    plot_h = height - top - bottom
    slot = (width - left - right) / max(len(products), 1)
    bar_w = slot * 0.35
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="chart-title" width="100%">',
        '<title id="chart-title">Successful calls and revenue per product</title>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#444"/>',
    ]
    for i, product in enumerate(products):
        calls, revenue = data[product]
        x = left + i * slot + slot * 0.12
        calls_h = plot_h * calls / max_calls
        revenue_h = plot_h * revenue / max_revenue
        label = html.escape(product)
        parts += [
            f'<rect x="{x:.1f}" y="{top + plot_h - calls_h:.1f}" width="{bar_w:.1f}" height="{calls_h:.1f}" '
            f'fill="#3b6fb6"><title>{label}: {calls:,} successful calls</title></rect>',
            f'<rect x="{x + bar_w:.1f}" y="{top + plot_h - revenue_h:.1f}" width="{bar_w:.1f}" '
            f'height="{revenue_h:.1f}" fill="#2e9e5b"><title>{label}: {money(revenue)} invoiced</title></rect>',
            f'<text x="{x + bar_w:.1f}" y="{top + plot_h + 18}" text-anchor="middle" font-size="13">{label}</text>',
            f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h - calls_h - 4:.1f}" text-anchor="middle" '
            f'font-size="10">{calls:,}</text>',
            # One line higher than the calls label, so that neighbouring labels never overlap.
            f'<text x="{x + bar_w * 1.5:.1f}" y="{top + plot_h - revenue_h - 18:.1f}" text-anchor="middle" '
            f'font-size="10">{money(revenue)}</text>',
        ]
    parts += [
        f'<rect x="{left}" y="{height - 20}" width="12" height="12" fill="#3b6fb6"/>',
        f'<text x="{left + 18}" y="{height - 10}" font-size="12">successful calls</text>',
        f'<rect x="{left + 150}" y="{height - 20}" width="12" height="12" fill="#2e9e5b"/>',
        f'<text x="{left + 168}" y="{height - 10}" font-size="12">revenue invoiced</text>',
        "</svg>",
    ]
    return "\n".join(parts)


def _lines_html(lines: list[Line], currency: str) -> str:
    return "<br>".join(f"{html.escape(line.description)}: {money(line.amount, currency)}" for line in lines)


def render_html(results: list[ConsumerResult], title: str = "API monetization demo: invoices vs quotes") -> str:
    rows = []
    for r in results:
        invoice = _lines_html(r.invoice_lines, r.currency)
        quoted = _lines_html(r.quote_lines, r.currency)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in r.notes)
        status = '<span class="ok">agrees</span>' if r.agrees else '<span class="bad">differs</span>'
        rows.append(
            f"<tr><th scope=row>{html.escape(r.consumer)}</th><td>{html.escape(r.product_id)}</td>"
            f"<td class=num>{r.successful_calls:,}</td><td class=num>{r.blocked_calls:,}</td>"
            f"<td>{invoice or '&mdash;'}<br><strong>{money(r.invoice_total, r.currency)}</strong></td>"
            f"<td>{quoted or '&mdash;'}<br><strong>{money(r.quote_total, r.currency)}</strong></td>"
            f"<td>{status}{'<ul>' + notes + '</ul>' if notes else ''}</td></tr>"
        )
    agreed = sum(r.agrees for r in results)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; }}
.ok {{ color: #1b7f3b; font-weight: bold; }} .bad {{ color: #b00020; font-weight: bold; }}
.scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{agreed} of {len(results)} consumers were invoiced by Stripe exactly what the pricing engine quoted.</p>
<h2>Usage and revenue per product</h2>
{render_chart_svg(results)}
<h2>Consumers</h2>
<div class="scroll"><table>
<thead><tr><th scope=col>Consumer</th><th scope=col>Product</th><th scope=col>Successful calls</th>
<th scope=col>Blocked calls</th><th scope=col>Stripe invoice</th><th scope=col>Pricing engine quote</th>
<th scope=col>Result</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>
</body></html>
"""


def write_html(results: list[ConsumerResult], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")
    return path
