"""Campaign runs against a real SMTP server: what arrives, what the ledger says, what is skipped."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from mailer.config import Settings
from mailer.db import create_schema, make_engine
from mailer.models import (
    Campaign,
    ConsentEvent,
    ConsentOrigin,
    Contact,
    Delivery,
    Suppression,
    SuppressionReason,
)
from mailer.planning import materialise, rules_from
from mailer.policy import (
    CampaignFacts,
    ConsentFact,
    ContactFacts,
    Decision,
    PurchaseFact,
    SuppressionFact,
    decide,
)
from mailer.sending import RunSummary, run_campaign
from mailer.sink import CapturedMessage, SmtpSink
from mailer.suppression import is_suppressed
from mailer.tokens import TokenSigner
from mailer.transport import Reply, SmtpConnection
from tests.conftest import make_settings
from tests.factories import add_consent, add_contact, new_campaign, suppress

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
WEB, IMPORT = ConsentOrigin.WEB, ConsentOrigin.IMPORT
REQ, CONF, WD = ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED, ConsentEvent.WITHDRAWN


def subscribed(list_name: str = "newsletter", days_ago: int = 30) -> list[ConsentFact]:
    return [ConsentFact(list_name, REQ, WEB, NOW - days_ago * DAY),
            ConsentFact(list_name, CONF, WEB, NOW - (days_ago - 1) * DAY)]  # fmt: skip


def run(engine: Engine, settings: Settings, campaign: Campaign, **kwargs: object) -> RunSummary:
    return asyncio.run(run_campaign(engine, settings, campaign, clock=lambda: NOW, **kwargs))  # type: ignore[arg-type]


def send(engine: Engine, settings: Settings, name: str, **kwargs: object) -> Campaign:
    campaign = new_campaign(engine, settings, name, at=NOW)
    run(engine, settings, campaign, **kwargs)
    return campaign


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def received(sink: SmtpSink) -> list[str]:
    return sorted(r for m in sink.messages for r in m.recipients)


Row = tuple[str, str, str | None, str | None, int]


def ledger(engine: Engine, campaign: Campaign) -> dict[str, Row]:
    """email -> (email, status, basis, skip_reason, attempts) for one campaign."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Contact.email, Delivery.status, Delivery.basis, Delivery.skip_reason,
                   Delivery.attempts)
            .join(Contact, Contact.id == Delivery.contact_id)  # type: ignore[arg-type]
            .where(Delivery.campaign_id == campaign.id)
        ).all()  # fmt: skip
    result = {row[0]: tuple(row) for row in rows}
    assert len(result) == len(rows)
    return result  # type: ignore[return-value]


def status_of(engine: Engine, campaign: Campaign) -> dict[str, str]:
    return {email: row[1] for email, row in ledger(engine, campaign).items()}


# -- what arrives -----------------------------------------------------------------------------


def test_every_message_has_one_recipient_the_sender_identity_and_working_unsubscribe_links(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    ids = {
        add_contact(engine, send_settings, f"p{n}@example.nl", at=NOW, first_name="Joël",
                    consents=subscribed()): f"p{n}@example.nl"
        for n in range(4)
    }  # fmt: skip
    send(engine, send_settings, "nov")
    signer = TokenSigner(send_settings.secret_keys)
    assert received(sink) == sorted(ids.values())
    for captured in sink.messages:
        assert len(captured.recipients) == 1  # rule 4: never a Bcc list
        recipient = captured.recipients[0]
        message = parsed(captured.data)
        assert [a.addr_spec for a in message["To"].addresses] == [recipient]
        assert len(message.get_all("To") or []) == 1
        assert message.get_all("Bcc") is None and message.get_all("Cc") is None
        assert not message.defects
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        text, html = (p.get_content() for p in parts)

        header = str(message["List-Unsubscribe"])
        https = re.findall(r"<(https://bakkerij\.example/unsubscribe/[^>]+)>", header)
        mailto = re.findall(r"<mailto:([^?>]+)\?subject=([^>]+)>", header)
        assert len(https) == 1 and len(mailto) == 1
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        for body in (text, html):
            assert "Bakkerij Voorbeeld B.V." in body
            assert "Dorpsstraat 1, 1234 AB Voorbeeld" in body
            assert https[0] in body
        assert f'href="{https[0]}"' in html

        url_token = https[0].rsplit("/", 1)[1]
        mailto_token = unquote(mailto[0][1]).split()[-1]
        for token in (url_token, mailto_token):
            claim = signer.read_unsubscribe(token)
            assert (ids[claim.contact_id], claim.list_name) == (recipient, "newsletter")


def test_the_ledger_has_one_row_per_contact_with_its_basis_or_reason_and_the_message_id(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    add_contact(engine, send_settings, "anna@example.nl", at=NOW, consents=subscribed())
    add_contact(engine, send_settings, "dirk@example.nl", at=NOW,
                purchases=[PurchaseFact("brood", NOW - 40 * DAY, True)])  # fmt: skip
    add_contact(engine, send_settings, "bram@example.nl", at=NOW,
                consents=[ConsentFact("newsletter", REQ, WEB, NOW - 3 * DAY)])  # fmt: skip
    add_contact(engine, send_settings, "ingrid@example.nl", at=NOW, consents=subscribed(),
                suppressions=[SuppressionFact("unsubscribed", NOW - 2 * DAY)])  # fmt: skip
    add_contact(engine, send_settings, "henk@example.nl", at=NOW)
    campaign = send(engine, send_settings, "nov")

    assert ledger(engine, campaign) == {
        "anna@example.nl": ("anna@example.nl", "sent", "consent", None, 1),
        "dirk@example.nl": ("dirk@example.nl", "sent", "existing_customer", None, 1),
        "bram@example.nl": ("bram@example.nl", "skipped", None, "pending_confirmation", 0),
        "ingrid@example.nl": ("ingrid@example.nl", "skipped", None, "suppressed", 0),
        "henk@example.nl": ("henk@example.nl", "skipped", None, "no_basis", 0),
    }
    arrived = {m.recipients[0]: parsed(m.data)["Message-ID"] for m in sink.messages}
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(Contact.email, Delivery.message_id)
                .join(Contact, Contact.id == Delivery.contact_id)  # type: ignore[arg-type]
                .where(Delivery.status == "sent")
            ).all()
        )
    assert stored == arrived
    assert len(set(arrived.values())) == 2


# -- running again, resuming ------------------------------------------------------------------


def test_running_a_campaign_again_mails_nobody_twice_but_includes_new_and_newly_confirmed(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    add_contact(engine, send_settings, "anna@example.nl", at=NOW, consents=subscribed())
    bram = add_contact(engine, send_settings, "bram@example.nl", at=NOW,
                       consents=[ConsentFact("newsletter", REQ, WEB, NOW - 3 * DAY)])  # fmt: skip
    campaign = new_campaign(engine, send_settings, "nov", at=NOW)
    run(engine, send_settings, campaign)
    assert received(sink) == ["anna@example.nl"]

    run(engine, send_settings, campaign)
    assert received(sink) == ["anna@example.nl"]

    add_contact(engine, send_settings, "carla@example.nl", at=NOW, consents=subscribed())
    run(engine, send_settings, campaign)
    assert received(sink) == ["anna@example.nl", "carla@example.nl"]

    add_consent(engine, bram, ConsentFact("newsletter", CONF, WEB, NOW - DAY))
    run(engine, send_settings, campaign)
    assert received(sink) == ["anna@example.nl", "bram@example.nl", "carla@example.nl"]
    assert ledger(engine, campaign)["bram@example.nl"][1:4] == ("sent", "consent", None)


def test_an_interrupted_run_marks_in_flight_rows_unknown_and_sends_the_queued_ones_once(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    ids = [
        add_contact(engine, send_settings, f"p{n}@example.nl", at=NOW, consents=subscribed())
        for n in range(6)
    ]
    campaign = new_campaign(engine, send_settings, "nov", at=NOW)
    materialise(engine, send_settings, campaign, NOW)
    with engine.begin() as conn:  # what a killed run leaves: two in flight, the rest queued
        conn.execute(
            update(Delivery).where(Delivery.contact_id.in_(ids[:2])).values(status="sending")  # type: ignore[union-attr]
        )
    summary = run(engine, send_settings, campaign)

    assert summary.in_doubt == 2
    assert Counter(m.recipients[0] for m in sink.messages) == {
        f"p{n}@example.nl": 1 for n in range(2, 6)
    }
    assert status_of(engine, campaign) == {
        "p0@example.nl": "unknown", "p1@example.nl": "unknown", "p2@example.nl": "sent",
        "p3@example.nl": "sent", "p4@example.nl": "sent", "p5@example.nl": "sent",
    }  # fmt: skip

    run(engine, send_settings, campaign)  # and a further run changes nothing
    assert len(sink.messages) == 4
    assert status_of(engine, campaign)["p0@example.nl"] == "unknown"


# -- rule 3: suppression is re-checked just before each send ----------------------------------


class UnsubscribeAfterFirstDelivery:
    """A real SMTP connection; right after the first delivery someone clicks "unsubscribe"."""

    def __init__(self, settings: Settings, engine: Engine, victim: str) -> None:
        self.inner = SmtpConnection(settings.smtp)
        self.engine, self.settings, self.victim, self.done = engine, settings, victim, False

    async def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        reply = await self.inner.send(sender, recipient, message)
        if not self.done:
            self.done = True
            suppress(self.engine, self.settings, self.victim, SuppressionReason.UNSUBSCRIBED, NOW)
        return reply

    async def probe(self) -> bool:
        return await self.inner.probe()

    async def close(self) -> None:
        await self.inner.close()


def test_an_unsubscribe_during_a_run_stops_the_message_to_that_person(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port, "max_connections": 1})
    for n in range(5):
        add_contact(engine, settings, f"p{n}@example.nl", at=NOW, consents=subscribed())
    campaign = send(engine, settings, "nov",
                    connect=lambda: UnsubscribeAfterFirstDelivery(settings, engine,
                                                                  "p3@example.nl"))  # fmt: skip
    assert received(sink) == ["p0@example.nl", "p1@example.nl", "p2@example.nl", "p4@example.nl"]
    rows = ledger(engine, campaign)
    assert rows["p3@example.nl"][1:4] == ("suppressed", "consent", "suppressed")
    assert {rows[f"p{n}@example.nl"][1] for n in (0, 1, 2, 4)} == {"sent"}


# -- scripted server faults -------------------------------------------------------------------


class Script:
    """A `sink.reply` hook: the replies to give one address, in order; 250 for everyone else."""

    def __init__(self, address: str, replies: list[str]) -> None:
        self.address, self.replies, self.calls = address, list(replies), 0
        self.lock = threading.Lock()

    def __call__(self, message: CapturedMessage) -> str | None:
        if message.recipients != (self.address,):
            return None
        with self.lock:
            self.calls += 1
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def test_a_hard_bounce_fails_the_row_and_suppresses_the_address_for_the_next_campaign(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    for local in ("gone", "anna"):
        add_contact(engine, send_settings, f"{local}@example.nl", at=NOW, consents=subscribed())
    sink.reply = Script("gone@example.nl", ["550 5.1.1 No such user"])
    first = send(engine, send_settings, "nov")
    assert received(sink) == ["anna@example.nl"]
    assert ledger(engine, first)["gone@example.nl"][1:] == ("failed", "consent", None, 1)
    with engine.connect() as conn:
        assert conn.execute(select(Suppression.reason)).scalars().all() == ["hard_bounce"]
        keys = send_settings.require_secret_keys()
        assert is_suppressed(conn, keys, "gone@example.nl", "offers")
        assert not is_suppressed(conn, keys, "anna@example.nl", "newsletter")

    sink.reply = None
    sink.messages.clear()
    second = send(engine, send_settings, "dec")
    assert received(sink) == ["anna@example.nl"]
    assert ledger(engine, second)["gone@example.nl"][1:] == ("skipped", None, "suppressed", 0)


def test_a_temporary_failure_is_retried_up_to_max_attempts_then_fails(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(
        db_url, smtp={"port": sink.port},
        throttle={"retry_base_seconds": 0, "max_attempts": 3},
    )  # fmt: skip
    for local in ("busy", "anna"):
        add_contact(engine, settings, f"{local}@example.nl", at=NOW, consents=subscribed())
    script = Script("busy@example.nl", ["451 4.3.0 try later"])
    sink.reply = script
    campaign = send(engine, settings, "nov")
    assert script.calls == 3
    assert received(sink) == ["anna@example.nl"]
    assert ledger(engine, campaign)["busy@example.nl"][1:] == ("failed", "consent", None, 3)
    with engine.connect() as conn:  # a soft failure is no reason to suppress
        assert conn.execute(select(Suppression.id)).first() is None


# -- rule 4: the throttle ---------------------------------------------------------------------


def test_the_global_rate_bounds_the_run_time_and_every_one_second_window(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(
        db_url, smtp={"port": sink.port, "max_connections": 3},
        throttle={"messages_per_second": 20, "per_domain_per_minute": 0},
    )  # fmt: skip
    for n in range(11):
        add_contact(engine, settings, f"p{n}@d{n % 3}.example", at=NOW, consents=subscribed())
    campaign = new_campaign(engine, settings, "rate", at=NOW)
    start = time.monotonic()
    run(engine, settings, campaign)
    elapsed = time.monotonic() - start
    times = sorted(m.received_at for m in sink.messages)
    assert len(times) == 11
    assert elapsed >= (11 - 1) / 20  # 11 messages at 20/s: ten gaps of 50 ms
    for first in times:
        assert sum(1 for t in times if first <= t < first + 1.0) <= 20 + 1


# -- the property: the server receives exactly what the policy allows -------------------------

LOCAL_PARTS = ["jan", "piet", "info", "sales", "contact", "offertes"]
# Addresses an NL company published for receiving offers; the test picks which are configured.
PUBLISHED = ["offertes@n0.example", "offertes@n1.example", "info@n2.example", "jan@n3.example"]

past = st.integers(min_value=0, max_value=90).map(lambda d: NOW - d * DAY)
# Consents and purchases may lie a little after the run's clock (decide ignores them until then).
# Suppressions never do: the send-time re-check rightly honours every suppression on file.
dates = st.integers(min_value=-2, max_value=90).map(lambda d: NOW - d * DAY)
consent_facts = st.builds(
    ConsentFact, st.sampled_from(["newsletter", "offers"]), st.sampled_from([REQ, CONF, WD]),
    st.sampled_from([WEB, IMPORT]), dates,
)  # fmt: skip
purchase_facts = st.builds(
    PurchaseFact, st.sampled_from(["brood", "taart"]), dates, st.booleans(), st.none() | dates
)
suppression_facts = st.builds(
    SuppressionFact, st.sampled_from([str(r) for r in SuppressionReason]), past,
    st.sampled_from([None, "newsletter", "offers"]),
)  # fmt: skip
person = st.tuples(
    st.sampled_from(LOCAL_PARTS),
    st.lists(consent_facts, max_size=4),
    st.lists(purchase_facts, max_size=2),
    st.lists(suppression_facts, max_size=2),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    people=st.lists(person, min_size=1, max_size=8),
    campaign_facts=st.builds(
        CampaignFacts, st.sampled_from(["newsletter", "offers"]), st.sampled_from(["brood", None])
    ),
    jurisdiction=st.sampled_from(["NL", "BE"]),
    role_addresses=st.booleans(),
    soft_optin=st.booleans(),
    offer_addresses=st.lists(st.sampled_from(PUBLISHED), unique=True, max_size=3),
)
def test_the_server_receives_exactly_the_addresses_the_policy_allows(
    sink: SmtpSink,
    people: list[tuple[str, list[ConsentFact], list[PurchaseFact], list[SuppressionFact]]],
    campaign_facts: CampaignFacts,
    jurisdiction: str,
    role_addresses: bool,
    soft_optin: bool,
    offer_addresses: list[str],
) -> None:
    sink.messages.clear()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            f"sqlite:///{Path(tmp) / 'p.db'}",
            smtp={"port": sink.port},
            policy={"jurisdiction": jurisdiction, "role_addresses": role_addresses,
                    "soft_optin": soft_optin, "offer_addresses": offer_addresses},
        )  # fmt: skip
        rules = rules_from(settings)
        engine = make_engine(settings.database.url)
        try:
            create_schema(engine)
            expected: dict[str, Decision] = {}
            for n, (local, consents, purchases, suppressions) in enumerate(people):
                address = f"{local}@n{n}.example"
                add_contact(engine, settings, address, at=NOW, consents=consents,
                            purchases=purchases, suppressions=suppressions)  # fmt: skip
                facts = ContactFacts(address, consents, purchases, suppressions)
                expected[address] = decide(facts, campaign_facts, NOW, rules)
            campaign = new_campaign(engine, settings, "property", at=NOW,
                                    list_name=campaign_facts.list_name,
                                    category=campaign_facts.category)  # fmt: skip
            run(engine, settings, campaign)
            rows = ledger(engine, campaign)
        finally:
            engine.dispose()
    allowed = sorted(a for a, decision in expected.items() if decision.allowed)
    assert received(sink) == allowed  # the same set, and each address exactly once
    assert {a: row[2] or row[3] for a, row in rows.items()} == {
        a: decision.label for a, decision in expected.items()
    }
