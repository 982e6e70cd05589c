"""Report pages read a page at a time through the SDK's `reports.list_by_subscription` (`ApimUsageReports`).

Against the APIM emulator: every row once over many pages with all four outcome classes, 429 with
Retry-After pausing the shared budget, 5xx retried. Against a loopback HTTPS server that answers
what the emulator never would (the same TLS certificate and token, the real client): the request is
the one a plain `reports.list_by_subscription` call sends, a nextLink is followed, two rows
of one subscription add up, and a malformed page is a clear ReportFormatError, not a KeyError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement.models import ProductContract

from billing.adapters.apim_client import ApimService
from billing.adapters.usage_reports import ApimUsageReports, ReportFormatError, report_filter
from billing.usage.plan import UsageCounts
from billing.usage.ratelimit import TokenBucket
from billing.usage.windows import ReportWindow
from emulators.apim.httpbase import LoopbackServer, Request, Response
from emulators.apim.server import ApimEmulator

AT = 1_750_000_000  # calls made at this instant; the window is the hour around it
WINDOW = ReportWindow(AT - 1800, AT + 1800)


@pytest.fixture
def apim(apim_emulator: ApimEmulator) -> Iterator[ApimService]:
    client = apim_emulator.management_client(retry_total=0)
    client.product.create_or_update(
        apim_emulator.resource_group,
        apim_emulator.service_name,
        "payg",
        ProductContract(display_name="payg", subscription_required=True, approval_required=False, state="published"),
    )
    yield ApimService(client, apim_emulator.resource_group, apim_emulator.service_name)
    client.close()


def _seed(emu: ApimEmulator, count: int) -> dict[str, UsageCounts]:
    """`count` subscriptions with calls of every outcome class, each number different per subscription."""
    expected = {}
    sids = [f"sub_rp{n:04d}" for n in range(count)]
    emu.bulk_create_subscriptions(sids, product_id="payg")
    at = datetime.fromtimestamp(AT, UTC)
    for n, sid in enumerate(sids):
        numbers = {"success": 100 + n, "blocked": n % 3, "failed": n % 5 + 1, "other": n % 2}
        for outcome, calls in numbers.items():
            emu.record_usage(sid, calls, at=at, outcome=outcome)
        expected[sid] = UsageCounts(**numbers)
    return expected


def test_a_report_of_many_pages_returns_every_row_once_with_all_outcomes(
    apim_emulator: ApimEmulator, apim: ApimService
) -> None:
    expected = _seed(apim_emulator, 123)
    reports = ApimUsageReports(apim, TokenBucket(1000), page_size=20, parallel_pages=3)
    assert reports.read(WINDOW) == expected
    assert reports.requests == 7  # 123 rows in pages of 20: 6 full pages and one of 3
    one = ApimUsageReports(apim, TokenBucket(1000), page_size=20)
    assert one.read(WINDOW, "sub_rp0042") == {"sub_rp0042": expected["sub_rp0042"]}


class _ManualTime:
    """A clock that moves only when the bucket sleeps; `on_sleep` runs at each sleep (APIM recovering)."""

    def __init__(self, on_sleep: Callable[[], None]) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self._on_sleep()


def test_a_429_pauses_the_shared_budget_for_its_retry_after(apim_emulator: ApimEmulator, apim: ApimService) -> None:
    expected = _seed(apim_emulator, 5)
    apim_emulator.faults.update({"error_rate_429": 1.0, "retry_after_seconds": 7})
    time = _ManualTime(lambda: apim_emulator.faults.update({"error_rate_429": 0.0}))
    reports = ApimUsageReports(apim, TokenBucket(1000, clock=time.clock, sleep=time.sleep))
    assert reports.read(WINDOW) == expected
    assert time.sleeps == [7.0]  # the bucket waited exactly the emulator's Retry-After, once
    assert reports.requests == 2


class _FailFirst(TokenBucket):
    """The shared budget; APIM answers 500 to everything until the second request is admitted."""

    def __init__(self, emu: ApimEmulator) -> None:
        super().__init__(1000)
        self._emu = emu

    def acquire(self) -> None:
        if self.taken == 1:
            self._emu.faults.update({"error_rate_500": 0.0})
        super().acquire()


def test_a_server_error_is_retried(apim_emulator: ApimEmulator, apim: ApimService) -> None:
    expected = _seed(apim_emulator, 4)
    apim_emulator.faults.update({"error_rate_500": 1.0})
    reports = ApimUsageReports(apim, _FailFirst(apim_emulator))
    assert reports.read(WINDOW) == expected
    assert reports.requests == 2


# A loopback HTTPS server answering report pages the emulator never would ----------------------------
class _Canned:
    """Serves `answers` in order (the last one again once they run out) and records each request."""

    def __init__(self, answers: list[Response]) -> None:
        self.answers = answers
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def __call__(self, req: Request) -> Response:
        with self._lock:
            self.requests.append(req)
            return self.answers[min(len(self.requests), len(self.answers)) - 1]


@pytest.fixture
def canned(apim_emulator: ApimEmulator) -> Iterator[Callable[[list[Response]], tuple[_Canned, ApimService, str]]]:
    """A canned server with the emulator's certificate, and a real client whose token the emulator issues."""
    servers: list[LoopbackServer] = []
    clients: list[Any] = []
    assert apim_emulator.tls is not None

    def start(answers: list[Response]) -> tuple[_Canned, ApimService, str]:
        app = _Canned(answers)
        assert apim_emulator.tls is not None
        server = LoopbackServer(app, 0, tls=(str(apim_emulator.tls.server_cert), str(apim_emulator.tls.server_key)))
        server.start()
        servers.append(server)
        client = ApiManagementClient(
            apim_emulator.client_secret_credential(),
            apim_emulator.subscription_id,
            base_url=server.url,
            connection_verify=apim_emulator.ca_bundle,
            retry_total=0,
        )
        clients.append(client)
        return app, ApimService(client, apim_emulator.resource_group, apim_emulator.service_name), server.url

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def _row(sid: str, success: int, blocked: int = 0) -> dict[str, Any]:
    return {
        "subscriptionId": f"/subscriptions/{sid}",
        "callCountSuccess": success,
        "callCountBlocked": blocked,
        "callCountFailed": 0,
        "callCountOther": 0,
    }


def test_the_request_is_the_sdks_and_a_next_link_is_followed_as_given(canned: Any) -> None:
    next_link_path = "/elsewhere/page2"
    app, service, url = canned([])
    next_link = f"{url}{next_link_path}?token=a%2Fb&api-version=2024-05-01"
    app.answers = [  # no count: the pages can only be followed one by one
        Response.json({"value": [_row("a", 1), _row("b", 2, 1)], "nextLink": next_link}),
        Response.json({"value": [_row("a", 3), _row("c", 4)], "nextLink": None}),
    ]
    reports = ApimUsageReports(service, TokenBucket(1000), page_size=2)
    counts = reports.read(WINDOW)
    # "a" is on two rows (as when APIM splits a subscription's calls): its calls add up.
    assert counts == {"a": UsageCounts(success=4), "b": UsageCounts(success=2, blocked=1), "c": UsageCounts(success=4)}
    first, second = app.requests
    assert (second.path, second.query) == (next_link_path, {"token": "a/b", "api-version": "2024-05-01"})

    app.requests.clear()
    app.answers = [Response.json({"value": []})]
    items = service.client.reports.list_by_subscription(
        service.resource_group, service.service_name, filter=report_filter(WINDOW), top=2
    )
    assert list(items) == []
    (sdk,) = app.requests
    assert (first.method, first.path, first.query) == (sdk.method, sdk.path, sdk.query)
    assert first.header("accept") == sdk.header("accept") == "application/json"
    assert first.header("authorization") == sdk.header("authorization")  # the client's own bearer token
    assert first.path.endswith(
        f"/resourceGroups/{service.resource_group}/providers/Microsoft.ApiManagement/service/"
        f"{service.service_name}/reports/bySubscription"
    )


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        (Response.html("<html><body>Gateway timeout</body></html>"), "not JSON"),
        (Response.json({"rows": []}), "'value' list"),
        (Response.json([1, 2]), "JSON list"),
        (Response.json({"value": [_row("a", 1), "oops"]}), "row 1 must be an object"),
        (Response.json({"value": [{**_row("a", 1), "callCountSuccess": "12"}]}), "'callCountSuccess'"),
        (Response.json({"value": [{**_row("a", 1), "subscriptionId": 7}]}), "'subscriptionId'"),
        (Response.json({"value": [], "count": "many"}), "'count'"),
        (Response.json({"value": [], "nextLink": 3}), "'nextLink'"),
    ],
)
def test_a_malformed_page_is_a_clear_error(canned: Any, answer: Response, named: str) -> None:
    app, service, _ = canned([answer])
    reports = ApimUsageReports(service, TokenBucket(1000))
    with pytest.raises(ReportFormatError) as err:
        reports.read(WINDOW)
    message = str(err.value)
    assert named in message
    assert "/reports/bySubscription" in message  # which request answered it
    assert len(app.requests) == 1  # a malformed answer is not retried
