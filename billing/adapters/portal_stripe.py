"""The Stripe operations the consumer portal needs, over the real Stripe SDK client."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

import stripe

from billing import catalog_names
from billing.adapters.stripe_cancel import cancel_with_final_invoice
from billing.portal.ports import BillingPeriod, CheckoutInfo, CheckoutRequest, CustomersPort, Debt

log = logging.getLogger(__name__)
LineItem = stripe.params.checkout.SessionCreateParamsLineItem
CHECKOUT_TTL_SECONDS = 30 * 60
CHECKOUT_META_FORM = "portal_form"  # the subscribe form a Checkout Session was made for


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:40]


def _search_string(value: str) -> str:
    # Stripe's search query language: string values in single quotes, quotes escaped with a backslash.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PortalStripe:
    def __init__(self, client: stripe.StripeClient, customers: CustomersPort) -> None:
        self._stripe = client
        self._c = client.v1
        self._customers = customers
        self._portal_config: str | None = None

    def find_customer(self, uid: str) -> str | None:
        kept = self._customers.get(uid)
        if kept is not None:
            return kept
        # A customer made before the app kept ids (or by the provider): search, once, and keep it.
        # Never for one the app just made: those are kept, and search can lag behind writes.
        query = f"metadata['{catalog_names.CUSTOMER_META_APIM_USER}']:{_search_string(uid)}"
        found = self._c.customers.search(params={"query": query, "limit": 1})
        return self._customers.keep(uid, found.data[0].id) if found.data else None

    def find_or_create_customer(self, uid: str, email: str | None) -> str:
        existing = self.find_customer(uid)
        if existing:
            return existing
        params: stripe.params.CustomerCreateParams = {"metadata": {catalog_names.CUSTOMER_META_APIM_USER: uid}}
        if email:
            params["email"] = email
        # Idempotent per user and parameters: a retry (or a double submit) gets the same customer.
        key = "portal-customer-" + _digest(uid, email or "")
        return self._customers.keep(uid, self._c.customers.create(params=params, options={"idempotency_key": key}).id)

    def price_ids(self, lookup_keys: Sequence[str]) -> dict[str, str]:
        if not lookup_keys:
            return {}
        prices = self._c.prices.list(params={"lookup_keys": list(lookup_keys), "active": True, "limit": 10})
        return {p.lookup_key: p.id for p in prices.data if p.lookup_key}

    def create_checkout(self, request: CheckoutRequest, idempotency_key: str) -> str:
        line_items: list[LineItem] = []
        for price, quantity in request.price_lines:
            item: LineItem = {"price": price}
            if quantity is not None:
                item["quantity"] = quantity
            line_items.append(item)
        product = request.metadata.get(catalog_names.SUB_META_PRODUCT, "")
        # One open Checkout per consumer and product: the sessions of other forms for it end now, so a
        # page kept from earlier (before a debt, say) cannot start a second subscription later. The
        # same form sent again keeps its session (the idempotency key replays it).
        self._expire_open_sessions(request.customer_id, product, keep_form=request.form_nonce)
        try:
            return self._create_session(request, line_items, product, idempotency_key)
        except stripe.IdempotencyError:
            # The same form sent again a while later: its expiry differs, so Stripe refuses the
            # replay; the session that form made is still open (it was kept above): use it.
            same = self._open_session_of_form(request.customer_id, request.form_nonce)
            if same is None:
                raise
            return same

    def _create_session(
        self, request: CheckoutRequest, line_items: list[LineItem], product: str, idempotency_key: str
    ) -> str:
        subscription_data: stripe.params.checkout.SessionCreateParamsSubscriptionData = {
            "metadata": dict(request.metadata)
        }
        if request.trial_days:
            # Stripe: "Integer representing the number of trial period days before the customer is charged
            # for the first time". Should the card be gone by then, the invoice is made all the same and its
            # failed charge suspends the key as a failed renewal does ("create_invoice", Stripe's default).
            subscription_data["trial_period_days"] = request.trial_days
            subscription_data["trial_settings"] = {"end_behavior": {"missing_payment_method": "create_invoice"}}
        session = self._c.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": request.customer_id,
                "line_items": line_items,
                "subscription_data": subscription_data,
                # Stripe's default, said out loud: a card even when a trial makes today's total 0 (`if_required`
                # would skip it), so the trial's end can charge the first invoice.
                "payment_method_collection": "always",
                "metadata": {catalog_names.SUB_META_PRODUCT: product, CHECKOUT_META_FORM: request.form_nonce},
                "allow_promotion_codes": True,
                "success_url": request.success_url,
                "cancel_url": request.cancel_url,
                # Stripe's shortest life for a session: 30 minutes (the default is 24 hours).
                "expires_at": int(time.time()) + CHECKOUT_TTL_SECONDS,
            },
            options={"idempotency_key": idempotency_key},
        )
        if not session.url:
            raise RuntimeError("Stripe returned a Checkout Session without a URL")
        return session.url

    def _open_session_of_form(self, customer_id: str, form_nonce: str) -> str | None:
        found = self._c.checkout.sessions.list(params={"customer": customer_id, "status": "open", "limit": 100})
        for session in found.auto_paging_iter():
            if (session.to_dict().get("metadata") or {}).get(CHECKOUT_META_FORM) == form_nonce and session.url:
                return str(session.url)
        return None

    def _expire_open_sessions(self, customer_id: str, product: str, *, keep_form: str) -> None:
        found = self._c.checkout.sessions.list(params={"customer": customer_id, "status": "open", "limit": 100})
        for session in found.auto_paging_iter():
            meta = session.to_dict().get("metadata") or {}
            if meta.get(catalog_names.SUB_META_PRODUCT) != product or meta.get(CHECKOUT_META_FORM) == keep_form:
                continue
            try:
                self._c.checkout.sessions.expire(session.id)
            except stripe.InvalidRequestError:
                continue  # completed or expired meanwhile; a completed one is refused when it is granted

    def checkout_info(self, session_id: str) -> CheckoutInfo | None:
        try:
            session = self._c.checkout.sessions.retrieve(session_id)
        except stripe.InvalidRequestError:
            return None
        sub = session.subscription
        sub_id = sub if isinstance(sub, str) or sub is None else sub.id
        return CheckoutInfo(session.id, str(session.status), sub_id)

    def cancel_subscription(self, subscription_id: str) -> None:
        cancel_with_final_invoice(self._stripe, subscription_id)

    def end_access(self, subscription_id: str, at: int) -> bool:
        # `cancel_at_period_end`: "Indicate whether this subscription should cancel at the end of the
        # current period" -- no renewal can charge a consumer who cancelled; the final invoice job
        # (billing.usage.final_invoice) cancels it sooner. The metadata tells every later sync that
        # access ended, and when.
        params: stripe.params.SubscriptionUpdateParams = {
            "cancel_at_period_end": True,
            "metadata": {catalog_names.SUB_META_ACCESS_ENDED: str(at)},
        }
        try:
            self._c.subscriptions.update(subscription_id, params=params)
        except stripe.InvalidRequestError as exc:
            current = self._c.subscriptions.retrieve(subscription_id)
            if current.status in ("canceled", "incomplete_expired"):
                return False  # ended already (Stripe answers 400 to changes of an ended subscription)
            raise exc from None
        return True

    def pending_final_invoices(self, uid: str) -> Sequence[str]:
        customer = self.find_customer(uid)
        if customer is None:
            return []
        # The default list leaves out canceled subscriptions, which have their final invoice already.
        found = self._c.subscriptions.list(params={"customer": customer, "limit": 100})
        return [
            sub.id
            for sub in found.auto_paging_iter()
            if sub.status != "incomplete_expired"
            and (sub.to_dict().get("metadata") or {}).get(catalog_names.SUB_META_ACCESS_ENDED)
        ]

    def subscription_period(self, subscription_id: str) -> BillingPeriod | None:
        try:
            # One request: the test clock (if any) comes expanded with the subscription.
            sub = self._c.subscriptions.retrieve(subscription_id, params={"expand": ["test_clock"]})
        except stripe.InvalidRequestError:
            return None
        # Since API version 2025-03-31 the billing period lives on the subscription items.
        items = sub["items"].data if "items" in sub else []
        if not items:
            return None
        clock = getattr(sub, "test_clock", None)
        clock_now = int(clock["frozen_time"]) if clock else None
        return BillingPeriod(int(items[0].current_period_start), int(items[0].current_period_end), clock_now)

    def live_subscriptions(self, uid: str) -> Sequence[str]:
        customer = self.find_customer(uid)
        if customer is None:
            return []
        # Every status, then those that can still bill: Stripe's default list leaves out only
        # canceled ones, and an incomplete_expired subscription has ended too.
        found = self._c.subscriptions.list(params={"customer": customer, "status": "all", "limit": 100})
        return [sub.id for sub in found.auto_paging_iter() if sub.status not in ("canceled", "incomplete_expired")]

    def expire_open_checkouts(self, uid: str) -> None:
        customer = self.find_customer(uid)
        if customer is None:
            return
        found = self._c.checkout.sessions.list(params={"customer": customer, "status": "open", "limit": 100})
        for session in found.auto_paging_iter():
            try:
                self._c.checkout.sessions.expire(session.id)
            except stripe.InvalidRequestError:
                # Completed or expired meanwhile; a completed one's subscription is cancelled by the caller.
                continue

    def outstanding_invoices(self, uid: str, email: str | None) -> Sequence[Debt]:
        customers = set()
        found_by_user = self.find_customer(uid)
        if found_by_user:
            customers.add(found_by_user)
        if email:
            # Also every customer with the address (a list, not a search: it does not lag), so that
            # closing the account and signing up again with the same address leaves the debt owed.
            by_email = self._c.customers.list(params={"email": email, "limit": 100})
            customers.update(c.id for c in by_email.auto_paging_iter())
        debts = []
        for customer in sorted(customers):
            # Uncollectible invoices can still be paid on their hosted page, and are still owed; a
            # draft with an amount due is a renewal or threshold invoice an hour from being charged.
            for status in ("open", "uncollectible", "draft"):
                found = self._c.invoices.list(params={"customer": customer, "status": status, "limit": 100})
                debts += [
                    Debt(
                        str(inv.id),
                        str(inv.number or ""),
                        str(inv.currency),
                        int(inv.amount_remaining or 0),
                        str(inv.hosted_invoice_url or ""),
                    )
                    for inv in found.auto_paging_iter()
                ]
        return debts

    def billing_portal_url(self, customer_id: str, return_url: str) -> str | None:
        """A customer portal session with the catalog's configuration; None if the catalog made none yet."""
        config = self._portal_configuration()
        if config is None:
            log.error("no customer portal configuration: run `python -m billing catalog apply`")
            return None
        session = self._c.billing_portal.sessions.create(
            params={"customer": customer_id, "return_url": return_url, "configuration": config}
        )
        return str(session.url)

    def _portal_configuration(self) -> str | None:
        if self._portal_config is None:
            found = self._c.billing_portal.configurations.list(params={"active": True, "limit": 100})
            for config in found.auto_paging_iter():
                if (config.to_dict().get("metadata") or {}).get(catalog_names.PORTAL_CONFIG_METADATA_KEY) == "portal":
                    self._portal_config = str(config.id)  # made once by the catalog, kept per process
                    break
        return self._portal_config
