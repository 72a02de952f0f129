"""Pause, resume and cancel through the campaign's status row, on SQLite and PostgreSQL.

What a worker may still do after a pause or cancel is decided by the database at the moment a
row is marked `sending`: these tests claim rows, change the status, and then try to start them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.core.tokens import address_hashes
from mailer.delivery.sending import CampaignStopped, queue_campaign, run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.campaign import get_campaign, report
from mailer.store.control import (
    cancel_campaign,
    control_state,
    pause_campaign,
    resume_campaign,
)
from mailer.store.ledger import STOPPED, DueDelivery, Ledger
from mailer.store.models import (
    Campaign,
    CampaignStatus,
    ConsentEvent,
    ConsentOrigin,
    Delivery,
    DeliveryStatus,
)
from mailer.store.planning import ConsentFact
from tests.conftest import SECRET
from tests.factories import add_contact, new_campaign

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def queued(engine: Engine, settings: Settings, people: int) -> Campaign:
    for n in range(people):
        add_contact(
            engine, settings, f"p{n}@example.nl", at=NOW,
            consents=[ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB,
                                  NOW - timedelta(days=3))],
        )  # fmt: skip
    campaign = new_campaign(engine, settings, "nov", at=NOW)
    queue_campaign(engine, settings, campaign, clock=lambda: NOW)
    return campaign


def worker(engine: Engine, name: str = "w1") -> Ledger:
    return Ledger(engine, owner=name, key_count=1, lease_seconds=60, clock=lambda: NOW)


def start(ledger: Ledger, job: DueDelivery) -> int | str | None:
    lane = ledger.lane()
    try:
        return lane.start(job, "newsletter", address_hashes(job.recipient.email, (SECRET,)))
    finally:
        lane.close()


def statuses(engine: Engine, campaign: Campaign) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(Delivery.status).where(Delivery.campaign_id == campaign.id))
        return Counter(status for (status,) in rows)


def status_of(engine: Engine, campaign: Campaign) -> str:
    return get_campaign(engine, campaign.name).status


def test_a_row_claimed_before_a_pause_is_not_started_and_goes_back_to_the_queue(
    engine: Engine, settings: Settings
) -> None:
    campaign = queued(engine, settings, 3)
    assert campaign.id is not None
    with worker(engine) as ledger:
        jobs = ledger.claim(10)
        assert len(jobs) == 3
        assert start(ledger, jobs[0]) == 1  # in flight before the pause: it goes out
        assert pause_campaign(engine, campaign.id, "too many bounces", NOW)
        assert start(ledger, jobs[1]) == STOPPED
        assert ledger.claim(10) == []  # a paused campaign gives no work
    assert statuses(engine, campaign) == {"sending": 1, "queued": 1, "claimed": 1}
    state = control_state(engine, campaign)
    assert (state.status, state.reason, state.changed_at) == ("paused", "too many bounces", NOW)
    assert state.unsent == 2

    assert resume_campaign(engine, campaign.id, NOW)
    with worker(engine, "w2") as ledger:
        again = ledger.claim(10)
    assert [job.delivery_id for job in again] == [jobs[1].delivery_id]
    assert control_state(engine, campaign).reason is None


def test_pause_and_resume_refuse_states_they_do_not_apply_to(
    engine: Engine, settings: Settings
) -> None:
    campaign = queued(engine, settings, 1)
    assert campaign.id is not None
    assert not resume_campaign(engine, campaign.id, NOW)  # running, not paused
    assert pause_campaign(engine, campaign.id, "by hand", NOW)
    assert not pause_campaign(engine, campaign.id, "again", NOW)
    assert control_state(engine, campaign).reason == "by hand"
    assert cancel_campaign(engine, campaign.id, "wrong offer", NOW) == 1
    assert not resume_campaign(engine, campaign.id, NOW)  # cancelled is for good
    assert not pause_campaign(engine, campaign.id, "later", NOW)
    assert cancel_campaign(engine, campaign.id, "twice", NOW) is None
    assert status_of(engine, campaign) == CampaignStatus.CANCELLED


def test_cancel_marks_every_unsent_row_cancelled_and_the_report_counts_them(
    engine: Engine, settings: Settings
) -> None:
    campaign = queued(engine, settings, 5)
    assert campaign.id is not None
    with worker(engine) as ledger:
        jobs = ledger.claim(2)
        assert start(ledger, jobs[0]) == 1
        assert cancel_campaign(engine, campaign.id, "wrong price", NOW) == 4
        assert start(ledger, jobs[1]) is None  # no longer this worker's to send
        lane = ledger.lane()
        lane.record(jobs[0].delivery_id, status=DeliveryStatus.SENT, smtp_reply="250 ok",
                    message_id="<m@x>", at=NOW)  # fmt: skip
        lane.close()
        assert ledger.release().requeued == 0  # a cancelled row is never queued again
    counted = report(engine, campaign)
    assert dict(counted.by_status) == {"sent": 1, "cancelled": 4}
    assert counted.status == "cancelled"


def test_a_paused_campaign_is_not_sent_and_the_error_says_how_to_continue(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    campaign = queued(engine, send_settings, 2)
    assert campaign.id is not None
    pause_campaign(engine, campaign.id, "paused by hand", NOW)
    with pytest.raises(CampaignStopped) as stopped:
        asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert str(stopped.value) == (
        'Campaign "nov" was paused (paused by hand, 2026-11-01 12:00:00 UTC). Nothing was sent; '
        "2 deliveries stay queued. To continue: `mailer campaign resume nov`, then "
        "`mailer campaign send nov` (or let running `mailer worker`s pick it up)."
    )
    assert sink.messages == []
    assert status_of(engine, campaign) == CampaignStatus.PAUSED  # not overwritten by the run

    resume_campaign(engine, campaign.id, NOW)
    asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert sorted(m.recipients[0] for m in sink.messages) == ["p0@example.nl", "p1@example.nl"]
    assert status_of(engine, campaign) == CampaignStatus.DONE


def test_a_cancelled_campaign_sends_nothing_and_says_why(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    campaign = queued(engine, send_settings, 2)
    assert campaign.id is not None
    cancel_campaign(engine, campaign.id, "wrong price", NOW)
    with pytest.raises(CampaignStopped, match=r'^Campaign "nov" was cancelled \(wrong price, '
                       r"2026-11-01 12:00:00 UTC\): 2 deliveries were cancelled and are never "
                       "sent. To send this message anyway, create a new campaign.$"):  # fmt: skip
        asyncio.run(run_campaign(engine, send_settings, campaign, clock=lambda: NOW))
    assert sink.messages == []
    assert dict(report(engine, campaign).by_status) == {"cancelled": 2}
