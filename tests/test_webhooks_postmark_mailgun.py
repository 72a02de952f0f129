"""Postmark and Mailgun webhooks through the real ASGI app: each provider's authentication, and
bounces and complaints recorded once."""

from __future__ import annotations

import pytest

from tests.webhook_support import (  # noqa: F401  (world_fixture: the fixture `world`)
    PASSWORD,
    World,
    basic,
    example,
    mailgun,
    post,
    state,
    world_fixture,
)

pytestmark = pytest.mark.anyio


async def test_postmark_needs_its_basic_auth_password(world: World) -> None:
    before = state(world.engine)
    body = example("postmark-bounce.json", Email="anna@example.nl")
    for headers in ({}, {"authorization": basic("wrong")}, {"authorization": "Bearer " + PASSWORD}):
        answer = await post(world.app, "/webhooks/postmark", body, **headers)
        assert answer.status_code == 401
        assert PASSWORD not in answer.text
    assert state(world.engine) == before


async def test_postmark_bounces_and_complaints_are_recorded_once(world: World) -> None:
    auth = {"authorization": basic(PASSWORD)}
    hard = example("postmark-bounce.json", Email="anna@example.nl")
    answer = await post(world.app, "/webhooks/postmark", hard, **auth)
    assert (answer.status_code, answer.json()) == (
        200,
        {"status": "recorded", "counted": {"hard_bounce": 1}},
    )
    complaint = example("postmark-spam-complaint.json", Email="bram@example.nl")
    assert (await post(world.app, "/webhooks/postmark", complaint, **auth)).status_code == 200
    soft = example(
        "postmark-bounce.json", ID=7, Type="SoftBounce", TypeCode=4096, Email="cees@example.nl"
    )
    assert (await post(world.app, "/webhooks/postmark", soft, **auth)).json()["counted"] == {
        "soft_bounce": 1
    }
    # Postmark's MessageID is its own; with "include bounce content" ours is in Content.
    dump = f"Received: ...\r\nMessage-ID: {world.message_ids['dirk@example.nl']}\r\n"
    quoted = example("postmark-bounce.json", ID=8, Email="d.alias@example.org", Content=dump)
    assert (await post(world.app, "/webhooks/postmark", quoted, **auth)).status_code == 200
    # The documented example as is: john@example.com was never mailed by us.
    stranger = example("postmark-bounce.json", ID=9)
    answer = await post(world.app, "/webhooks/postmark", stranger, **auth)
    assert answer.json()["counted"] == {"unmatched": 1}

    suppressed, ledger = state(world.engine)
    assert suppressed == [("complaint", None), ("hard_bounce", None), ("hard_bounce", None)]
    assert ledger == {
        "anna@example.nl": ("failed", "hard_bounce"),
        "bram@example.nl": ("sent", "complaint"),
        "cees@example.nl": ("sent", "soft_bounce"),
        "dirk@example.nl": ("failed", "hard_bounce"),
    }
    again = await post(world.app, "/webhooks/postmark", hard, **auth)  # Postmark retries
    assert (again.status_code, again.json()) == (200, {"status": "already_recorded"})
    assert state(world.engine) == (suppressed, ledger)


# -- Mailgun -------------------------------------------------------------------------------


async def test_mailgun_refuses_forged_stale_and_replayed_calls(world: World) -> None:
    before = state(world.engine)
    path = "/webhooks/mailgun"
    forged = mailgun(
        "mailgun-failed-permanent.json", world, "anna@example.nl", token="t" * 50, key="not-the-key"
    )
    assert (await post(world.app, path, forged)).status_code == 401
    unsigned = example("mailgun-failed-permanent.json")
    del unsigned["signature"]
    assert (await post(world.app, path, unsigned)).status_code == 401
    # The documented example's own signature: made with Mailgun's key, not ours, and old.
    assert (
        await post(world.app, path, example("mailgun-failed-permanent.json"))
    ).status_code == 401
    stale = mailgun(
        "mailgun-failed-permanent.json", world, "anna@example.nl", token="s" * 50, age=16 * 60
    )
    answer = await post(world.app, path, stale)
    assert answer.status_code == 401 and "stale" in answer.json()["detail"]
    assert state(world.engine) == before

    fresh = mailgun("mailgun-failed-permanent.json", world, "anna@example.nl", token="f" * 50)
    assert (await post(world.app, path, fresh)).json()["counted"] == {"hard_bounce": 1}
    recorded = state(world.engine)
    replayed = await post(world.app, path, fresh)
    assert replayed.status_code == 401 and "used before" in replayed.json()["detail"]
    # Mailgun retrying the same event with a new signature: answered, not recorded twice.
    retry = mailgun("mailgun-failed-permanent.json", world, "anna@example.nl", token="r" * 50)
    assert (await post(world.app, path, retry)).json() == {"status": "already_recorded"}
    assert state(world.engine) == recorded
    assert recorded[1]["anna@example.nl"] == ("failed", "hard_bounce")


async def test_mailgun_complaints_suppress_on_every_list(world: World) -> None:
    body = mailgun("mailgun-complained.json", world, "bram@example.nl", token="c" * 50)
    assert (await post(world.app, "/webhooks/mailgun", body)).json()["counted"] == {"complaint": 1}
    suppressed, ledger = state(world.engine)
    assert suppressed == [("complaint", None)]
    assert ledger["bram@example.nl"] == ("sent", "complaint")


# -- Amazon SES through SNS -----------------------------------------------------------------
