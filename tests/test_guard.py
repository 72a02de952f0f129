"""The campaign guard: a campaign whose bounces or complaints hurt the sender pauses itself."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from mailer.core.guard import GuardLimits, trip
from mailer.core.policy import ConsentFact
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import CapturedMessage, SmtpSink
from mailer.store.control import CampaignStopped, resume_campaign
from mailer.store.models import Campaign, ConsentEvent, ConsentOrigin, Delivery
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign

NOW = datetime(2026, 11, 16, 9, tzinfo=UTC)
JAN = datetime(2026, 1, 1, tzinfo=UTC)
SUBSCRIBED = [
    ConsentFact("newsletter", ConsentEvent.REQUESTED, ConsentOrigin.WEB, JAN),
    ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB, JAN),
]
LIMITS = GuardLimits()


def test_nothing_trips_before_the_minimum_number_of_attempts() -> None:
    assert trip(99, 99, 99, LIMITS) is None
    assert trip(0, 0, 0, LIMITS) is None


def test_a_rate_over_its_limit_trips_and_the_reason_names_it() -> None:
    bounced = trip(100, 6, 0, LIMITS)
    assert bounced is not None and bounced.rate == "hard_bounce_rate"
    assert bounced.reason == (
        "guard: hard_bounce_rate 6.00% is over the limit 5.00% (6 hard bounces in 100 attempts)"
    )
    assert trip(100, 5, 0, LIMITS) is None  # at the limit is not over it
    complained = trip(1000, 60, 4, LIMITS)  # both over: the complaint rate is named
    assert complained is not None and complained.reason == (
        "guard: complaint_rate 0.40% is over the limit 0.30% (4 complaints in 1000 attempts)"
    )


@given(st.integers(1, 10**7), st.integers(0, 10**7), st.integers(0, 10**7))
def test_a_rate_trips_exactly_when_it_is_over_its_limit(
    attempts: int, hard: int, complaints: int
) -> None:
    tripped = trip(attempts, min(hard, attempts), min(complaints, attempts), LIMITS)
    over_bounces = min(hard, attempts) / attempts > LIMITS.max_hard_bounce_rate
    over_complaints = min(complaints, attempts) / attempts > LIMITS.max_complaint_rate
    if attempts < LIMITS.min_attempts:
        assert tripped is None
    else:
        assert (tripped is not None) == (over_bounces or over_complaints)
        if tripped is not None:
            assert tripped.rate == ("complaint_rate" if over_complaints else "hard_bounce_rate")
            assert tripped.value > tripped.limit


def _refuse_every_fifth(message: CapturedMessage) -> str | None:
    address = message.recipients[0]
    if int(address.split("@")[0].removeprefix("p")) % 5 == 0:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
    return None


def _status(engine: Engine, campaign_id: int) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(Campaign.status, Campaign.status_reason).where(Campaign.id == campaign_id)
        ).one()
    return str(row[0]), row[1]


def _attempts(engine: Engine, campaign_id: int) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(Delivery.campaign_id == campaign_id,
                                           Delivery.attempts > 0)  # fmt: skip
        return int(conn.execute(query).scalar_one())


async def _send_until_paused(engine: Engine, settings: object, campaign: Campaign) -> None:
    """`campaign send` as the user sees it: the run stops by itself, saying the guard paused it."""
    run = run_campaign(engine, settings, campaign, clock=lambda: NOW)  # type: ignore[arg-type]
    with pytest.raises(CampaignStopped) as stopped:
        await asyncio.wait_for(run, timeout=60)
    assert f'Campaign "{campaign.name}" was paused (guard: hard_bounce_rate ' in str(stopped.value)
    assert campaign.id is not None
    assert _status(engine, campaign.id)[0] == "paused"


def test_a_campaign_to_a_stale_list_pauses_itself_before_200_attempts(
    engine: Engine, db_url: str
) -> None:
    with SmtpSink(reply=_refuse_every_fifth) as sink:
        settings = make_settings(db_url, smtp={"port": sink.port})
        for n in range(400):
            add_contact(engine, settings, f"p{n}@example.nl", at=NOW, consents=SUBSCRIBED)
        campaign = new_campaign(engine, settings, "stale", at=NOW)
        assert campaign.id is not None
        asyncio.run(_send_until_paused(engine, settings, campaign))
        status, reason = _status(engine, campaign.id)
        attempts = _attempts(engine, campaign.id)
        assert 100 <= attempts < 200
        assert reason is not None
        assert re.fullmatch(
            r"guard: hard_bounce_rate (19|20|21)\.\d\d% is over the limit "
            r"5\.00% \(\d+ hard bounces in \d+ attempts\)",
            reason,
        ), reason
        print(f"paused after {attempts} attempts: {reason}")

        judged = int(reason.rsplit(" in ", 1)[1].split()[0])  # attempts when it tripped

        # The user looks, decides the list is fine after all, and resumes: the guard judges
        # only what was sent after the pause, so 20% bounces trip it again only once another
        # 100 attempts were made (those still in flight at the pause among them).
        assert resume_campaign(engine, campaign.id, NOW)
        asyncio.run(_send_until_paused(engine, settings, campaign))
        again = _attempts(engine, campaign.id)
        assert judged + 95 <= again < attempts + 200
        second = _status(engine, campaign.id)[1]
        assert second is not None and second.startswith("guard: hard_bounce_rate ")
