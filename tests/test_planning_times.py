"""The planner reads consent times as text from the database (one text per event); the instant
it decides on must be the one stored, to the microsecond, whatever the session's time zone
and date style (PostgreSQL formats a timestamptz in both)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from mailer.core.policy import ConsentFact
from mailer.core.states import ConsentEvent, ConsentOrigin
from mailer.store.db import create_schema, make_engine
from mailer.store.planning import plan_counts
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
US = timedelta(microseconds=1)
# Fourteen hours east of UTC, and day-first dates: a time read in the session's form or zone
# instead of UTC's would move every instant here by hours, or fail to parse.
FAR_SESSION = "%20-cTimeZone%3DPacific/Kiritimati%20-cDateStyle%3DSQL%2CDMY"


@pytest.fixture
def far_url(db_url: str) -> str:
    return db_url + FAR_SESSION if db_url.startswith("postgresql") else db_url


@pytest.fixture
def far_engine(far_url: str) -> Iterator[Engine]:
    engine = make_engine(far_url)
    create_schema(engine)
    yield engine
    engine.dispose()


def test_a_confirmation_counts_from_its_stored_instant_to_the_microsecond(
    far_url: str, far_engine: Engine
) -> None:
    settings = make_settings(far_url)
    requested = ConsentFact("newsletter", ConsentEvent.REQUESTED, ConsentOrigin.WEB, NOW - 2 * US)
    for name, confirmed_at in [("before", NOW - US), ("at", NOW), ("after", NOW + US)]:
        confirmed = ConsentFact("newsletter", ConsentEvent.CONFIRMED, ConsentOrigin.WEB,
                                confirmed_at)  # fmt: skip
        add_contact(far_engine, settings, f"{name}@example.org", at=NOW - timedelta(days=1),
                    consents=[requested, confirmed])  # fmt: skip
    campaign = new_campaign(far_engine, settings, "instants", at=NOW - timedelta(days=1))

    summary = plan_counts(far_engine, settings, campaign, NOW)

    # Confirmed one microsecond before the run, or at its very instant: mailed on consent.
    # One microsecond after: still only requested at the run's instant.
    assert summary.by_label == {"consent": 2, "pending_confirmation": 1}
