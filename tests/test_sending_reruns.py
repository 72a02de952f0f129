"""Running a campaign again, or after an interrupted run: nobody is mailed twice, new and newly
confirmed contacts are included, and in-flight rows become `unknown` instead of being resent.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine, update

from mailer.config import Settings
from mailer.core.policy import ConsentFact
from mailer.delivery.sink import SmtpSink
from mailer.store.models import Delivery
from mailer.store.planning import materialise
from tests.factories import add_consent, add_contact, new_campaign
from tests.sending_support import (
    CONF,
    DAY,
    NOW,
    REQ,
    WEB,
    ledger,
    received,
    run,
    status_of,
    subscribed,
)

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
