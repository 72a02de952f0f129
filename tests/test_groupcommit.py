"""Group commit: the lane statements of one worker's connections in one transaction.

On SQLite (inline) and PostgreSQL (one round trip from the event loop, pipelined), through
`GroupCommit` as a worker's connections use it: what is asked in one loop tick is one group,
written as a whole or not at all; each lane gets its own answer; and a failed group leaves
the connection fit for the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Engine, select, text

from mailer.config import Settings
from mailer.core.tokens import address_hashes
from mailer.delivery.groupcommit import GroupCommit
from mailer.store.lane import DueDelivery, Lane, LaneConnection, Outcome, Query, Steps
from mailer.store.ledger import Ledger
from mailer.store.models import Delivery, DeliveryStatus, SuppressionReason
from tests.conftest import SECRET
from tests.factories import suppress
from tests.test_ledger_queue import NOW, Clock, queued_campaign, worker

World = tuple[Ledger, LaneConnection, list[DueDelivery]]


@pytest.fixture
def world(engine: Engine, settings: Settings) -> Iterator[World]:
    queued_campaign(engine, settings, 4)
    with worker(engine, "a", Clock()) as ledger:
        jobs = ledger.claim(4)
        shared = LaneConnection(engine)
        try:
            yield ledger, shared, jobs
        finally:
            shared.close()


def _starting(
    lane: Lane, job: DueDelivery, previous: Outcome | None = None
) -> Callable[[], Steps[int | str | None]]:
    hashes = address_hashes(job.recipient.email, (SECRET,))
    return lambda: lane.starting(job, "newsletter", hashes, previous=previous)


def _refused() -> Steps[object]:
    """A lane statement the database refuses."""
    return (yield Query("SELECT no_such_column FROM delivery", {}))


def _in_one_group(shared: LaneConnection, *calls: Callable[[], Steps[object]]) -> list[object]:
    """Ask for every call in the same loop tick, as connections woken together do; the
    answers (or errors) and how many commits it took."""

    async def run() -> list[object]:
        group = GroupCommit(shared, pipelined=shared.engine.dialect.name != "sqlite")
        try:
            answers = await asyncio.gather(*(group.run(c) for c in calls), return_exceptions=True)
        finally:
            await group.finished()
        return [*answers, group.groups]

    return asyncio.run(run())


def _status(engine: Engine) -> dict[int, str]:
    d = Delivery.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return {r.id: r.status for r in conn.execute(select(d.c.id, d.c.status))}


def test_what_is_asked_in_one_tick_is_one_commit_and_each_lane_gets_its_answer(
    engine: Engine, world: World
) -> None:
    ledger, shared, (first, second, third, _fourth) = world
    one, two = ledger.lane(shared), ledger.lane(shared)
    assert _in_one_group(shared, _starting(one, first)) == [1, 1]
    sent = Outcome(first.delivery_id, DeliveryStatus.SENT, "250 ok", "<m@x>", NOW)
    both = _in_one_group(shared, _starting(one, second, previous=sent), _starting(two, third))
    assert both == [1, 1, 1]  # two starts, one commit
    status = _status(engine)
    assert status[first.delivery_id] == "sent"
    assert status[second.delivery_id] == status[third.delivery_id] == "sending"


def test_a_lane_found_suppressed_in_a_group_is_marked_so_and_the_others_start(
    engine: Engine, settings: Settings, world: World
) -> None:
    ledger, shared, (first, second, _third, _fourth) = world
    one, two = ledger.lane(shared), ledger.lane(shared)
    suppress(engine, settings, second.recipient.email, SuppressionReason.UNSUBSCRIBED, NOW)
    assert _in_one_group(shared, _starting(one, first), _starting(two, second)) == [
        1,
        "suppressed",
        1,
    ]
    status = _status(engine)
    assert (status[first.delivery_id], status[second.delivery_id]) == ("sending", "suppressed")


def test_a_group_with_a_failing_statement_writes_nothing_and_the_next_group_works(
    engine: Engine, world: World
) -> None:
    ledger, shared, (first, second, third, _fourth) = world
    one, two, three = ledger.lane(shared), ledger.lane(shared), ledger.lane(shared)

    async def twice() -> tuple[list[object], list[object]]:
        group = GroupCommit(shared, pipelined=engine.dialect.name != "sqlite")
        try:
            failed = await asyncio.gather(
                group.run(_starting(one, first)),
                group.run(_refused),
                group.run(_starting(two, second)),
                return_exceptions=True,
            )
            status = _status(engine)
            assert status[first.delivery_id] == status[second.delivery_id] == "claimed"
            worked = await asyncio.gather(
                group.run(_starting(one, first)), group.run(_starting(three, third))
            )
        finally:
            await group.finished()
        return list(failed), list(worked)

    failed, worked = asyncio.run(twice())
    assert all("no_such_column" in str(error) for error in failed)  # each lane sees the error
    assert worked == [1, 1]
    status = _status(engine)
    assert status[first.delivery_id] == status[third.delivery_id] == "sending"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a server's connection
def test_a_group_on_a_connection_the_server_cut_fails_and_writes_nothing(
    engine: Engine, world: World
) -> None:
    ledger, shared, (first, second, third, _fourth) = world
    one, two, three = ledger.lane(shared), ledger.lane(shared), ledger.lane(shared)

    async def cut() -> list[object]:
        group = GroupCommit(shared, pipelined=True)
        try:
            assert await group.run(_starting(one, first)) == 1
            with engine.connect() as conn:  # what an administrator or a failover does
                conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'mailer lanes' AND datname = current_database()"
                ))  # fmt: skip
            await asyncio.sleep(0.2)
            errors = await asyncio.gather(
                group.run(_starting(two, second)),
                group.run(_starting(three, third)),
                return_exceptions=True,
            )
            return list(errors)
        finally:
            await group.finished()

    errors = asyncio.run(cut())
    assert all(isinstance(error, psycopg.OperationalError) for error in errors), errors
    status = _status(engine)
    assert status[first.delivery_id] == "sending"
    assert status[second.delivery_id] == status[third.delivery_id] == "claimed"
