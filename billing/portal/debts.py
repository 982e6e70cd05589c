"""What a consumer owes, which must be paid before a new paid subscription or a renewal.

A debt is an open or uncollectible Stripe invoice of the consumer's customer, whatever product or
subscription it billed (also one the consumer has since cancelled): a card that never pays cannot
start over with a new subscription. A subscription suspended for non-payment always has one (the
invoice whose payment failed stays open until paid, voided or marked uncollectible). Pure code.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.models import CURRENCY_EXPONENTS
from billing.portal.ports import Debt, PaymentsPort
from billing.pricing import format_minor


@dataclass(frozen=True)
class DebtLine:
    label: str  # "Invoice ABC-0001"
    amount: str  # "USD 1,500.01"
    pay_url: str  # Stripe's hosted invoice page, where it can be paid


def describe(debt: Debt) -> DebtLine:
    exponent = CURRENCY_EXPONENTS.get(debt.currency.lower(), 2)
    amount = format_minor(debt.amount_remaining, debt.currency, exponent)
    return DebtLine(f"Invoice {debt.number or debt.invoice_id}", amount, debt.hosted_invoice_url)


def outstanding_debts(payments: PaymentsPort, uid: str, email: str | None) -> list[DebtLine]:
    return [describe(d) for d in payments.outstanding_invoices(uid, email) if d.amount_remaining > 0]
