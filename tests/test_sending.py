"""Campaign runs against a real SMTP server: what arrives, what the ledger says, what is skipped."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import tempfile
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from mailer.config import Settings
from mailer.db import create_schema, make_engine
from mailer.models import ConsentEvent, ConsentOrigin, Delivery, SuppressionReason
from mailer.planning import rules_from
from mailer.policy import (
    CampaignFacts,
    ConsentFact,
    ContactFacts,
    PurchaseFact,
    SuppressionFact,
    decide,
)
from mailer.sending import run_campaign
from mailer.sink import SmtpSink
from mailer.suppression import add_suppression
from mailer.tokens import TokenSigner
from mailer.transport import Reply, SmtpConnection
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
WEB, IMPORT = ConsentOrigin.WEB, ConsentOrigin.IMPORT
REQ, CONF, WD = ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED, ConsentEvent.WITHDRAWN


def subscribed(list_name: str = "newsletter", days_ago: int = 30) -> list[ConsentFact]:
    return [ConsentFact(list_name, REQ, WEB, NOW - days_ago * DAY),
            ConsentFact(list_name, CONF, WEB, NOW - (days_ago - 1) * DAY)]  # fmt: skip


def send(engine: Engine, settings: Settings, name: str, **kwargs: object) -> None:
    campaign = new_campaign(engine, settings, name, at=NOW)
    asyncio.run(run_campaign(engine, settings, campaign, clock=lambda: NOW, **kwargs))


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def ledger(engine: Engine) -> list[tuple[int | None, str, str | None, str | None, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(Delivery.contact_id, Delivery.status, Delivery.basis,
                   Delivery.skip_reason, Delivery.attempts).order_by(Delivery.id)
        )]  # fmt: skip


def test_every_message_has_one_recipient_identity_and_working_unsubscribe_in_both_parts(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    ids = {
        add_contact(engine, send_settings, f"p{n}@example.nl", at=NOW, first_name="Joël",
                    consents=subscribed()): f"p{n}@example.nl"
        for n in range(4)
    }  # fmt: skip
    send(engine, send_settings, "nov")
    signer = TokenSigner(send_settings.secret_keys)
    assert sorted(m.recipients[0] for m in sink.messages) == sorted(ids.values())
    for captured in sink.messages:
        assert len(captured.recipients) == 1
        message = parsed(captured.data)
        assert message.get_all("To") is not None and len(message.get_all("To") or []) == 1
        assert message["To"].addresses[0].addr_spec == captured.recipients[0]
        assert message.get_content_type() == "multipart/alternative"
        text, html = (part.get_content() for part in message.iter_parts())
        urls = re.findall(r"<(https://[^>]+)>", message["List-Unsubscribe"])
        assert len(urls) == 1 and "<mailto:unsubscribe@bakkerij.example?" in str(
            message["List-Unsubscribe"]
        )
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        for body in (text, html):
            assert "Bakkerij Voorbeeld B.V." in body
            assert "Dorpsstraat 1, 1234 AB Voorbeeld" in body
            assert urls[0] in body
        token = urls[0].rsplit("/", 1)[1]
        claim = signer.read_unsubscribe(token)
        assert (ids[claim.contact_id], claim.list_name) == (captured.recipients[0], "newsletter")


def test_the_ledger_records_each_decision_and_the_message_id_that_arrived(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    anna = add_contact(engine, send_settings, "anna@example.nl", at=NOW, consents=subscribed())
    henk = add_contact(engine, send_settings, "henk@example.nl", at=NOW)
    send(engine, send_settings, "nov")
    assert ledger(engine) == [
        (anna, "sent", "consent", None, 1),
        (henk, "skipped", None, "no_basis", 0),
    ]
    with engine.connect() as conn:
        message_id = conn.execute(
            select(Delivery.message_id).where(Delivery.contact_id == anna)
        ).scalar()
    assert parsed(sink.messages[0].data)["Message-ID"] == message_id


def test_sending_a_campaign_again_mails_nobody_twice_but_includes_new_and_newly_confirmed(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    add_contact(engine, send_settings, "anna@example.nl", at=NOW, consents=subscribed())
    bram = add_contact(engine, send_settings, "bram@example.nl", at=NOW,
                       consents=[ConsentFact("newsletter", REQ, WEB, NOW - 3 * DAY)])  # fmt: skip
    campaign = new_campaign(engine, send_settings, "nov", at=NOW)
    asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert [m.recipients[0] for m in sink.messages] == ["anna@example.nl"]

    asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert len(sink.messages) == 1

    add_contact(engine, send_settings, "carla@example.nl", at=NOW, consents=subscribed())
    from mailer.models import Consent

    with engine.begin() as conn:
        conn.execute(Consent.__table__.insert().values(
            contact_id=bram, list_name="newsletter", event=CONF, origin=WEB, wording="Ja.",
            source="test", at=NOW - DAY))  # fmt: skip
    asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert sorted(m.recipients[0] for m in sink.messages) == [
        "anna@example.nl", "bram@example.nl", "carla@example.nl"
    ]  # fmt: skip


def test_an_interrupted_run_resumes_and_never_resends_what_was_in_flight(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    for n in range(6):
        add_contact(engine, send_settings, f"p{n}@example.nl", at=NOW, consents=subscribed())
    campaign = new_campaign(engine, send_settings, "nov", at=NOW)
    from mailer.planning import materialise

    materialise(engine, send_settings, campaign, NOW)
    with engine.begin() as conn:  # what a killed run leaves: two in flight, one already sent
        conn.execute(
            update(Delivery).where(Delivery.contact_id.in_([1, 2])).values(status="sending")
        )
        conn.execute(update(Delivery).where(Delivery.contact_id == 3).values(status="sent"))
    asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert sorted(m.recipients[0] for m in sink.messages) == [
        "p3@example.nl", "p4@example.nl", "p5@example.nl"
    ]  # fmt: skip
    statuses = {row[0]: row[1] for row in ledger(engine)}
    assert statuses == {1: "unknown", 2: "unknown", 3: "sent", 4: "sent", 5: "sent", 6: "sent"}


class UnsubscribesAfterFirst:
    """A real connection; after the first delivery someone else clicks "unsubscribe"."""

    def __init__(self, settings: Settings, engine: Engine, victim: str) -> None:
        self.inner = SmtpConnection(settings.smtp)
        self.engine, self.settings, self.victim, self.done = engine, settings, victim, False

    async def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        reply = await self.inner.send(sender, recipient, message)
        if not self.done:
            self.done = True
            with self.engine.begin() as conn:
                add_suppression(conn, self.settings.require_secret_keys(), self.victim,
                                SuppressionReason.UNSUBSCRIBED, NOW)  # fmt: skip
        return reply

    async def probe(self) -> bool:
        return await self.inner.probe()

    async def close(self) -> None:
        await self.inner.close()


def test_an_unsubscribe_during_a_run_takes_effect_before_the_next_message(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(db_url, smtp={"port": sink.port, "max_connections": 1})
    for n in range(5):
        add_contact(engine, settings, f"p{n}@example.nl", at=NOW, consents=subscribed())
    send(engine, settings, "nov",
         connect=lambda: UnsubscribesAfterFirst(settings, engine, "p3@example.nl"))  # fmt: skip
    assert "p3@example.nl" not in {m.recipients[0] for m in sink.messages}
    assert len(sink.messages) == 4
    assert ledger(engine)[3][1:4] == ("suppressed", "consent", "suppressed")


def test_the_global_rate_holds_in_every_one_second_window(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(
        db_url, smtp={"port": sink.port, "max_connections": 3},
        throttle={"messages_per_second": 10, "per_domain_per_minute": 0},
    )  # fmt: skip
    for n in range(16):
        add_contact(engine, settings, f"p{n}@d{n % 3}.example", at=NOW, consents=subscribed())
    start = asyncio.run(_timed(engine, settings))
    times = sorted(m.received_at for m in sink.messages)
    assert len(times) == 16
    assert times[-1] - start >= (16 - 1) / 10 - 0.02  # the rate's lower bound on elapsed time
    for first in times:
        assert sum(1 for t in times if first <= t < first + 1.0) <= 10 + 1


async def _timed(engine: Engine, settings: Settings) -> float:
    import time

    start = time.monotonic()
    await run_campaign(engine, settings, new_campaign(engine, settings, "rate", at=NOW),
                       clock=lambda: NOW)  # fmt: skip
    return start


# -- the property: the server receives exactly what the policy allows -----------------------

dates = st.integers(min_value=1, max_value=90).map(lambda d: NOW - d * DAY)
person = st.fixed_dictionaries(
    {
        "local": st.sampled_from(["jan", "info", "sales", "offertes", "piet"]),
        "consents": st.lists(
            st.builds(ConsentFact, st.sampled_from(["newsletter", "offers"]),
                      st.sampled_from([REQ, CONF, WD]), st.sampled_from([WEB, IMPORT]), dates),
            max_size=4,
        ),
        "purchases": st.lists(
            st.builds(PurchaseFact, st.sampled_from(["brood", "taart"]), dates, st.booleans(),
                      st.none() | dates),
            max_size=2,
        ),
        "suppressions": st.lists(
            st.builds(SuppressionFact, st.sampled_from(["unsubscribed", "objected", "erased"]),
                      dates, st.sampled_from([None, "newsletter", "offers"])),
            max_size=1,
        ),
    }
)  # fmt: skip


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    people=st.lists(person, min_size=1, max_size=8),
    jurisdiction=st.sampled_from(["NL", "BE"]),
    role_addresses=st.booleans(),
    soft_optin=st.booleans(),
)
def test_the_server_receives_exactly_the_addresses_the_policy_allows(
    sink: SmtpSink, people: list[dict[str, list[object] | str]], jurisdiction: str,
    role_addresses: bool, soft_optin: bool,
) -> None:  # fmt: skip
    sink.messages.clear()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(
            f"sqlite:///{Path(tmp) / 'p.db'}",
            smtp={"port": sink.port},
            policy={"jurisdiction": jurisdiction, "role_addresses": role_addresses,
                    "soft_optin": soft_optin, "offer_addresses": ["offertes@n1.example"]},
        )  # fmt: skip
        engine = make_engine(settings.database.url)
        create_schema(engine)
        expected = set()
        for n, p in enumerate(people):
            address = f"{p['local']}@n{n}.example"
            facts = ContactFacts(address, p["consents"], p["purchases"], p["suppressions"])
            add_contact(engine, settings, address, at=NOW, consents=facts.consents,
                        purchases=facts.purchases, suppressions=facts.suppressions)  # fmt: skip
            if decide(
                facts, CampaignFacts("newsletter", "brood"), NOW, rules_from(settings)
            ).allowed:
                expected.add(address)
        send(engine, settings, "property")
        engine.dispose()
    assert {m.recipients[0] for m in sink.messages} == expected
    assert len(sink.messages) == len(expected)
