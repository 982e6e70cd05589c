"""The account rules with in-memory ports: confirmation before anything, guessing bounded, resets.

Over HTTP on the local stack the same rules are tried by an attacker in test_account_security.py.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable

import pytest

from billing.portal import accounts as service
from billing.portal import passwords
from billing.portal.clients import client_address
from billing.portal.hash_budget import HashBudget, HashingBusy
from billing.portal.records import Account, DeviceToken, credential_tag
from tests.portal.fakes import (
    CountingBudget,
    FakeApim,
    InMemoryAccounts,
    InMemoryLinks,
    InMemoryThrottles,
    RecordingMailer,
    account_ports,
)

PASSWORD = "correct horse battery staple"
NOW = 1_800_000_000


def form(email: str = "ada@example.com", password: str = PASSWORD) -> service.SignUpForm:
    return service.SignUpForm(email, password, "Ada", "Lovelace")


def parts(ports: service.AccountPorts) -> tuple[InMemoryAccounts, InMemoryLinks, RecordingMailer, FakeApim]:
    assert isinstance(ports.accounts, InMemoryAccounts)
    assert isinstance(ports.links, InMemoryLinks)
    assert isinstance(ports.mailer, RecordingMailer)
    assert isinstance(ports.apim, FakeApim)
    return ports.accounts, ports.links, ports.mailer, ports.apim


def device_of(ports: service.AccountPorts, nonce: str = "owner", email: str = "ada@example.com") -> DeviceToken:
    """The device cookie a browser got when it signed in to the account (as it is now)."""
    account = ports.accounts.get(email)
    assert account is not None
    return DeviceToken(credential_tag(email, account.password_hash), nonce)


def confirmed(email: str = "ada@example.com", uid: str = "u1") -> Account:
    return Account(email, passwords.hash_password(PASSWORD), uid, "Ada", "Lovelace", NOW - 100, confirmed_at=NOW - 100)


def raised(call: Callable[..., object], *args: object, **kwargs: object) -> service.AccountError:
    with pytest.raises(service.AccountError) as caught:
        call(*args, **kwargs)
    return caught.value


# ---- sign-up -----------------------------------------------------------------------------------
def test_sign_up_creates_nothing_until_the_address_is_confirmed() -> None:
    ports = account_ports()
    accounts, links, mailer, apim = parts(ports)
    service.request_sign_up(form(), "/docs", "203.0.113.7", ports, NOW)
    assert accounts.rows == {}
    assert set(apim.users) == {"1"}  # no APIM user yet either
    [mail] = mailer.sent
    assert (mail.to, mail.subject) == ("ada@example.com", "Confirm your e-mail address")
    assert "https://app.example/api/portal/signup/confirm?token=" in mail.text
    [(link, _)] = links.rows.values()
    assert link.password_hash != PASSWORD
    assert passwords.verify_password(PASSWORD, link.password_hash)
    assert link.expires_at - NOW == 24 * 3600


def test_sign_up_answers_alike_for_a_known_address_and_only_the_mail_differs() -> None:
    ports = account_ports(confirmed())
    accounts, links, mailer, _ = parts(ports)
    assert isinstance(ports.hashing, CountingBudget)
    before = dict(accounts.rows)
    service.request_sign_up(form(password="another long passphrase"), "/", "c", ports, NOW)  # answers nothing
    assert accounts.rows == before  # the password of the account is not touched
    [(link, _)] = links.rows.values()  # a link row, as for an unknown address: the same work
    assert link.purpose == "reset"
    [mail] = mailer.sent
    assert mail.subject == "You already have an account"
    assert "https://portal.example/" in mail.text
    assert "https://app.example/api/portal/password/reset?token=" in mail.text
    assert ports.hashing.hashes == 1  # as much work as for an unknown address: timing tells nothing


def test_a_stranger_filling_the_owners_mail_allowance_still_hands_the_owner_a_way_in() -> None:
    ports = account_ports(confirmed())
    _, _, mailer, _ = parts(ports)
    for client in ("a", "b", "c", "d"):  # a stranger signs up with the owner's address, again and again
        service.request_sign_up(form(password="the stranger's passphrase"), "/", client, ports, NOW)
    for n in range(5):  # and locks the account for browsers without the owner's device cookie
        raised(service.sign_in, "ada@example.com", f"guess {n}", client="x", device=None, ports=ports, now=NOW)
    service.request_password_reset("ada@example.com", "owner", ports, NOW + 1)  # over the hour's allowance
    assert len(mailer.to("ada@example.com")) == 3
    # Every mail that did arrive carries a reset link that lets the owner in.
    new = "violet kettle under nine bridges"
    account = service.reset_password(mailer.link("ada@example.com"), new, new, ports, NOW + 2)
    assert service.sign_in("ada@example.com", new, client="owner", device=None, ports=ports, now=NOW + 3)
    assert account.apim_user_id == "u1"


def test_confirming_creates_the_account_and_its_user_once() -> None:
    ports = account_ports()
    accounts, _links, mailer, apim = parts(ports)
    service.request_sign_up(form(), "/docs", "c", ports, NOW)
    token = mailer.link("ada@example.com")
    wrong = raised(service.confirm_sign_up, token, "not the password I chose", ports, NOW + 60)
    assert (wrong.status, wrong.field) == (401, "password")
    assert accounts.rows == {}
    account, return_url = service.confirm_sign_up(token, PASSWORD, ports, NOW + 60)
    assert return_url == "/docs"
    assert account.confirmed_at == NOW + 60
    assert apim.users[account.apim_user_id] == "ada@example.com"
    again = raised(service.confirm_sign_up, token, PASSWORD, ports, NOW + 61)
    assert again.status == 410
    assert "used already" in again.message


def test_a_confirmation_link_expires() -> None:
    ports = account_ports()
    _, _, mailer, _ = parts(ports)
    service.request_sign_up(form(), "/", "c", ports, NOW)
    late = raised(service.confirm_sign_up, mailer.link("ada@example.com"), PASSWORD, ports, NOW + 24 * 3600)
    assert late.status == 410
    assert "expired" in late.message


def test_a_confirmation_link_takes_five_passwords_at_most() -> None:
    ports = account_ports()
    _, _, mailer, _ = parts(ports)
    service.request_sign_up(form(), "/", "c", ports, NOW)
    token = mailer.link("ada@example.com")
    for _ in range(5):
        assert raised(service.confirm_sign_up, token, "wrong guess number", ports, NOW).status == 401
    assert raised(service.confirm_sign_up, token, PASSWORD, ports, NOW).status == 429


def test_a_provider_made_user_is_tied_only_after_its_address_is_confirmed() -> None:
    apim = FakeApim()
    apim.users["provider-made"] = "victim@example.com"
    ports = account_ports(apim=apim)
    accounts, _, mailer, _ = parts(ports)
    # The attacker signs up with the victim's address: the link goes to the victim's mailbox.
    service.request_sign_up(form("victim@example.com", "attacker knows this one"), "/", "attacker", ports, NOW)
    assert accounts.rows == {}
    # Even a victim who opens the link cannot confirm with a password it does not know.
    token = mailer.link("victim@example.com")
    assert raised(service.confirm_sign_up, token, PASSWORD, ports, NOW).status == 401
    # The owner signs up and confirms: the account is tied to the provider's user.
    service.request_sign_up(form("victim@example.com"), "/", "owner", ports, NOW + 1)
    account, _ = service.confirm_sign_up(mailer.link("victim@example.com"), PASSWORD, ports, NOW + 2)
    assert account.apim_user_id == "provider-made"


@pytest.mark.parametrize("admin", ["1", "group-member"])
def test_an_administrator_is_never_tied_to_an_account(admin: str) -> None:
    apim = FakeApim()
    apim.users["group-member"] = "ops@provider.example"
    apim.administrators.add("group-member")
    ports = account_ports(apim=apim)
    accounts, _, mailer, _ = parts(ports)
    email = apim.users[admin]
    service.request_sign_up(form(email), "/", "c", ports, NOW)
    refused = raised(service.confirm_sign_up, mailer.link(email), PASSWORD, ports, NOW)
    assert refused.status == 403
    assert "administrator" in refused.message
    assert accounts.rows == {}


def test_mails_to_one_address_are_limited_per_hour_with_the_same_answer() -> None:
    ports = account_ports()
    _, _, mailer, _ = parts(ports)
    for client in ("a", "b", "c", "d", "e"):
        service.request_sign_up(form("target@example.com"), "/", client, ports, NOW)
    assert len(mailer.to("target@example.com")) == 3
    service.request_sign_up(form("target@example.com"), "/", "f", ports, NOW + 3600)
    assert len(mailer.to("target@example.com")) == 4


def test_sign_ups_from_one_client_are_limited() -> None:
    ports = account_ports()
    for n in range(10):
        service.request_sign_up(form(f"user{n}@example.com"), "/", "198.51.100.1", ports, NOW)
    refused = raised(service.request_sign_up, form("one-more@example.com"), "/", "198.51.100.1", ports, NOW)
    assert refused.status == 429
    assert refused.retry_after == 3600


def test_a_mail_server_that_fails_answers_503_and_a_retry_works() -> None:
    ports = account_ports()
    _, _, mailer, _ = parts(ports)
    mailer.down = True
    failed = raised(service.request_sign_up, form(), "/", "c", ports, NOW)
    assert failed.status == 503
    assert failed.retry_after > 0
    mailer.down = False
    service.request_sign_up(form(), "/", "c", ports, NOW + 60)
    assert service.confirm_sign_up(mailer.link("ada@example.com"), PASSWORD, ports, NOW + 61)[0].confirmed_at


# ---- sign-in -----------------------------------------------------------------------------------
def test_guessing_stops_after_five_and_the_device_of_the_owner_still_gets_in() -> None:
    ports = account_ports(confirmed())
    for n in range(5):
        assert (
            raised(
                service.sign_in, "ada@example.com", f"guess {n}", client=f"bot{n}", device=None, ports=ports, now=NOW
            ).status
            == 401
        )
    locked = raised(
        service.sign_in, "ada@example.com", PASSWORD, client="owner-new-laptop", device=None, ports=ports, now=NOW + 1
    )
    assert locked.status == 429
    assert locked.retry_after == 15 * 60 - 1
    assert "Forgot your password?" in locked.message
    account = service.sign_in(
        "ada@example.com", PASSWORD, client="owner", device=device_of(ports), ports=ports, now=NOW + 2
    )
    assert account.apim_user_id == "u1"
    # The lock on browsers without the cookie stays: the owner's success does not reopen it.
    assert (
        raised(
            service.sign_in, "ada@example.com", "guess 6", client="bot", device=None, ports=ports, now=NOW + 3
        ).status
        == 429
    )
    # After the window, guessing resumes from zero.
    assert (
        raised(
            service.sign_in, "ada@example.com", "guess 7", client="bot", device=None, ports=ports, now=NOW + 15 * 60
        ).status
        == 401
    )


def test_a_device_cookie_has_its_own_allowance() -> None:
    ports = account_ports(confirmed())
    stolen = device_of(ports, "stolen")
    for _ in range(5):
        assert (
            raised(
                service.sign_in, "ada@example.com", "typo typo typo", client="c", device=stolen, ports=ports, now=NOW
            ).status
            == 401
        )
    assert (
        raised(service.sign_in, "ada@example.com", PASSWORD, client="c", device=stolen, ports=ports, now=NOW).status
        == 429
    )
    assert service.sign_in("ada@example.com", PASSWORD, client="c", device=None, ports=ports, now=NOW)


def test_many_device_cookies_do_not_multiply_the_guesses() -> None:
    ports = account_ports(confirmed())
    answers = [
        raised(
            service.sign_in,
            "ada@example.com",
            f"guess {n}",
            client="c",
            device=device_of(ports, f"d{n}"),
            ports=ports,
            now=NOW,
        ).status
        for n in range(30)
    ]
    assert answers.count(401) == 20
    assert answers[20:] == [429] * 10


def test_a_password_change_retires_older_device_cookies_and_reset_links() -> None:
    ports = account_ports(confirmed())
    accounts, _, mailer, _ = parts(ports)
    old_device = device_of(ports)
    service.request_password_reset("ada@example.com", "c", ports, NOW)
    older_link = mailer.link("ada@example.com")
    service.request_password_reset("ada@example.com", "c", ports, NOW + 1)
    new = "violet kettle under nine bridges"
    service.reset_password(mailer.link("ada@example.com"), new, new, ports, NOW + 2)
    # The older link was made under the old password: it opens nothing now.
    assert (
        raised(
            service.reset_password, older_link, "another fine passphrase", "another fine passphrase", ports, NOW + 3
        ).status
        == 410
    )
    # The old device cookie is a stranger's browser now: it shares the account's five guesses.
    for n in range(5):
        raised(
            service.sign_in, "ada@example.com", f"guess {n}", client="x", device=old_device, ports=ports, now=NOW + 4
        )
    assert (
        raised(service.sign_in, "ada@example.com", new, client="y", device=None, ports=ports, now=NOW + 5).status == 429
    )
    assert accounts.get("ada@example.com") is not None


def test_a_busy_instance_counts_no_guess() -> None:
    ports = account_ports(confirmed())
    full = HashBudget(slots=1, wait_seconds=0.01)
    busy_ports = service.AccountPorts(**{**ports.__dict__, "hashing": full})
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        taken.set()
        release.wait()

    holder = threading.Thread(target=full.run, args=(hold,))
    holder.start()
    taken.wait()
    statuses = [
        raised(
            service.sign_in, "ada@example.com", PASSWORD, client="c", device=device_of(ports), ports=busy_ports, now=NOW
        ).status
        for _ in range(8)
    ]
    release.set()
    holder.join()
    assert statuses == [429] * 8
    assert isinstance(ports.throttles, InMemoryThrottles)
    assert ports.throttles.windows == {}
    assert service.sign_in(
        "ada@example.com", PASSWORD, client="c", device=device_of(ports), ports=busy_ports, now=NOW + 1
    )


def test_sign_ins_from_one_client_are_limited_across_accounts() -> None:
    ports = account_ports()
    for n in range(30):
        raised(
            service.sign_in,
            f"user{n}@example.com",
            "whatever it is",
            client="203.0.113.9",
            device=None,
            ports=ports,
            now=NOW,
        )
    refused = raised(
        service.sign_in,
        "another@example.com",
        "whatever it is",
        client="203.0.113.9",
        device=None,
        ports=ports,
        now=NOW,
    )
    assert refused.status == 429
    assert "network" in refused.message


def test_an_account_from_before_confirmation_must_confirm_at_its_next_sign_in() -> None:
    legacy = Account("old@example.com", passwords.hash_password(PASSWORD), "legacy-uid", "Old", "Timer", 0)
    apim = FakeApim()
    apim.users["legacy-uid"] = "old@example.com"
    ports = account_ports(legacy, apim=apim)
    accounts, _, mailer, _ = parts(ports)
    refused = raised(service.sign_in, "old@example.com", PASSWORD, client="c", device=None, ports=ports, now=NOW)
    assert refused.status == 403
    assert "confirm your e-mail address" in refused.message
    account, _ = service.confirm_sign_up(mailer.link("old@example.com"), PASSWORD, ports, NOW + 5)
    assert (account.apim_user_id, account.confirmed_at, account.created_at) == ("legacy-uid", NOW + 5, 0)
    assert service.sign_in("old@example.com", PASSWORD, client="c", device=None, ports=ports, now=NOW + 6)
    assert accounts.get("old@example.com") == account


def test_a_scrypt_hash_still_signs_in_and_is_replaced_by_argon2id() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    encoded = (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    old_hash = "$".join(("scrypt", "1024", "8", "1", *encoded))
    ports = account_ports(Account("ada@example.com", old_hash, "u1", "Ada", "L", 0, confirmed_at=1))
    accounts, _, _, _ = parts(ports)
    assert passwords.needs_rehash(old_hash)
    service.sign_in("ada@example.com", PASSWORD, client="c", device=None, ports=ports, now=NOW)
    stored = accounts.get("ada@example.com")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not passwords.needs_rehash(stored.password_hash)
    assert service.sign_in("ada@example.com", PASSWORD, client="c", device=None, ports=ports, now=NOW + 1)


# ---- reset -------------------------------------------------------------------------------------
def test_reset_sets_a_new_password_once() -> None:
    ports = account_ports(confirmed())
    accounts, _, mailer, _ = parts(ports)
    service.request_password_reset("Ada@Example.com", "c", ports, NOW)
    [mail] = mailer.sent
    assert mail.subject == "Choose a new password"
    token = mailer.link("ada@example.com")
    weak = raised(service.reset_password, token, "password12", "password12", ports, NOW + 10)
    assert weak.field == "new_password"
    assert "too easy to guess" in weak.message
    new = "violet kettle under nine bridges"
    service.reset_password(token, new, new, ports, NOW + 10)
    assert raised(service.reset_password, token, new, new, ports, NOW + 11).status == 410
    assert (
        raised(service.sign_in, "ada@example.com", PASSWORD, client="c", device=None, ports=ports, now=NOW + 12).status
        == 401
    )
    assert service.sign_in("ada@example.com", new, client="c", device=None, ports=ports, now=NOW + 12)
    assert accounts.get("ada@example.com") is not None


def test_reset_of_an_unknown_address_mails_only_that_there_is_no_account() -> None:
    ports = account_ports()
    _, links, mailer, _ = parts(ports)
    service.request_password_reset("nobody@example.com", "c", ports, NOW)
    [mail] = mailer.sent
    assert mail.subject == "No account with this address"
    assert "token=" not in mail.text
    [(decoy, _)] = links.rows.values()  # written anyway, so the answer takes as long; it opens nothing
    assert decoy.credential == ""


def test_a_reset_link_expires_after_an_hour() -> None:
    ports = account_ports(confirmed())
    _, _, mailer, _ = parts(ports)
    service.request_password_reset("ada@example.com", "c", ports, NOW)
    new = "violet kettle under nine bridges"
    assert raised(service.reset_password, mailer.link("ada@example.com"), new, new, ports, NOW + 3600).status == 410


# ---- passwords, clients, hashing budget --------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short", "at least 10 characters"),
        ("aaaaaaaaaa", "too easy to guess"),
        ("1234567890", "too easy to guess"),
        ("password12", "too easy to guess"),
        ("          ", "only spaces"),
        ("qwertyuiop1", "too easy to guess"),
        ("x" * 201, "at most 200 characters"),
        ("lovelace2024!", "too easy to guess"),  # the account's own name and a year
    ],
)
def test_weak_passwords_are_refused_naming_the_rule(password: str, rule: str) -> None:
    with pytest.raises(passwords.PasswordPolicyError, match=rule):
        passwords.check_policy(password, personal=("ada@example.com", "Ada", "Lovelace"))


@pytest.mark.parametrize("password", [PASSWORD, "Tr0ub4dor&3x-mauve", "violet kettle under nine bridges"])
def test_strong_passwords_pass(password: str) -> None:
    passwords.check_policy(password, personal=("ada@example.com", "Ada", "Lovelace"))


def test_argon2id_hashes_carry_owasp_parameters_and_a_salt() -> None:
    first, second = passwords.hash_password(PASSWORD), passwords.hash_password(PASSWORD)
    assert first != second
    assert first.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password(PASSWORD, first)
    assert not passwords.verify_password(PASSWORD + "!", first)
    assert not passwords.verify_password(PASSWORD, "md5$whatever")


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.7:50112", "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7:50112", "203.0.113.7"),  # what the caller sent comes first: only the last counts
        ("[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1::/56"),
        ("2001:db8:1:2ff:aaaa::1", "2001:db8:1:200::/56"),  # a site's /56: one client
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("", "unknown"),
        ("not an address", "unknown"),
    ],
)
def test_client_address_is_the_last_forwarded_entry(header: str, client: str) -> None:
    assert client_address(header) == client


def test_the_hashing_budget_refuses_beyond_its_slots_instead_of_queueing() -> None:
    budget = HashBudget(slots=2, wait_seconds=0.01)
    holding, release = threading.Barrier(3), threading.Event()

    def hold() -> str:
        holding.wait()
        release.wait()
        return threading.current_thread().name

    workers = [threading.Thread(target=budget.run, args=(hold,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    holding.wait()  # both slots are taken now
    with pytest.raises(HashingBusy):
        budget.run(lambda: "a third hash")
    release.set()
    for worker in workers:
        worker.join()
    # Free again; the work runs on the budget's own threads, not the caller's.
    assert budget.run(lambda: threading.current_thread().name).startswith("password-hash")


def test_a_busy_budget_answers_429_with_retry_after() -> None:
    ports = account_ports(confirmed())
    full = HashBudget(slots=1, wait_seconds=0.01)
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        taken.set()
        release.wait()

    holder = threading.Thread(target=full.run, args=(hold,))
    holder.start()
    taken.wait()
    busy = raised(
        service.sign_in,
        "ada@example.com",
        PASSWORD,
        client="c",
        device=None,
        ports=service.AccountPorts(**{**ports.__dict__, "hashing": full}),
        now=NOW,
    )
    release.set()
    holder.join()
    assert busy.status == 429
    assert busy.retry_after > 0


def test_an_unconfirmed_older_account_changes_nothing_through_account_forms() -> None:
    from billing.portal import account_ops  # noqa: PLC0415

    legacy = Account("old@example.com", passwords.hash_password(PASSWORD), "u9", "Old", "Timer", 0)
    ports = account_ports(legacy)
    new = "violet kettle under nine bridges"
    refused = raised(
        account_ops.change_password,
        "old@example.com",
        "u9",
        PASSWORD,
        new,
        new,
        ports=ports,
        client="c",
        device=None,
        now=NOW,
    )
    assert refused.status == 403
    assert "confirm your e-mail address" in refused.message
    assert ports.accounts.get("old@example.com") == legacy


@pytest.mark.parametrize(
    "address",
    [
        "victim(1)@example.com",
        '"victim"@example.com',
        "x:victim@example.com",
        "x<victim@example.com",
        "x,attacker@evil.example",
        "a\x00b@example.com",
        "ada@example",
        "ada@-example.com",
        ".ada@example.com",
        "a@" + "." * 16000 + "@",
        "x" * 65 + "@example.com",
        "ada@exämple.com",
    ],
)
def test_only_plain_addresses_are_accepted(address: str) -> None:
    ports = account_ports()
    _, _, mailer, _ = parts(ports)
    refused = raised(service.request_sign_up, form(address), "/", "c", ports, NOW)
    assert (refused.status, refused.field) == (400, "email")
    assert raised(service.request_password_reset, address, "c", ports, NOW).field == "email"
    assert mailer.sent == []


def test_a_closing_account_is_not_reopened_by_a_reset() -> None:
    closing = Account(
        "ada@example.com", passwords.hash_password(PASSWORD), "u1", "Ada", "L", 0, closing_since=NOW, confirmed_at=1
    )
    ports = account_ports(closing)
    _, _, mailer, _ = parts(ports)
    service.request_password_reset("ada@example.com", "c", ports, NOW)
    new = "violet kettle under nine bridges"
    assert raised(service.reset_password, mailer.link("ada@example.com"), new, new, ports, NOW + 1).status == 403
