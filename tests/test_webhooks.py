"""Relay webhooks through the real ASGI app: secrets from the environment, a complaint that pauses a
campaign, and no body that gives a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from double_optin.app import create_app
from tests.conftest import SECRET, make_settings
from tests.webhook_support import (  # noqa: F401  (world_fixture: the fixture `world`)
    CERT_URL,
    PASSWORD,
    TOPIC,
    World,
    basic,
    mailgun,
    post,
    state,
    world_fixture,
)

pytestmark = pytest.mark.anyio


async def test_webhook_secrets_come_from_the_environment(world: World) -> None:
    from mailer.config import parse_settings
    from tests.conftest import BASE_CONFIG

    settings = parse_settings(
        {**BASE_CONFIG, "database": {"url": "sqlite://"}},
        source="test.toml",
        environ={
            "MAILER_SECRET_KEY": SECRET,
            "MAILER_POSTMARK_WEBHOOK_PASSWORD": "p" * 32,
            "MAILER_MAILGUN_SIGNING_KEY": "k" * 32,
        },
    )
    assert (settings.postmark_webhook_password, settings.mailgun_signing_key) == (
        "p" * 32,
        "k" * 32,
    )
    unset = create_app(make_settings(world.settings.database.url), world.engine)
    for path in ("/webhooks/postmark", "/webhooks/mailgun", "/webhooks/ses"):
        answer = await post(unset, path, b"{}", authorization=basic(""))
        assert answer.status_code == 401, path


async def test_a_complaint_by_webhook_pauses_a_running_campaign_over_its_limit(
    world: World,
) -> None:
    from sqlalchemy import update

    from mailer.config import GuardSettings
    from mailer.store.models import Campaign

    settings = world.settings.model_copy(update={"guard": GuardSettings(min_attempts=4)})
    app = create_app(settings, world.engine, clock=world.clock, fetch=world.fetcher)
    with world.engine.begin() as conn:  # as if the send were still going on
        conn.execute(update(Campaign).values(status="running"))
    body = mailgun("mailgun-complained.json", world, "bram@example.nl", token="p" * 50)
    assert (await post(app, "/webhooks/mailgun", body)).status_code == 200
    with world.engine.connect() as conn:
        status, reason = conn.execute(select(Campaign.status, Campaign.status_reason)).one()
    assert status == "paused"
    assert reason == (
        "guard: complaint_rate 25.00% is over the limit 0.30% (1 complaint in 4 attempts)"
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=5),
    max_leaves=20,
)  # fmt: skip
SHAPES = st.fixed_dictionaries(
    {},
    optional={
        "RecordType": st.sampled_from(["Bounce", "SpamComplaint"]) | JSON,
        "Type": st.sampled_from(["HardBounce", "Notification", "SubscriptionConfirmation"]) | JSON,
        "signature": JSON, "event-data": JSON, "Message": JSON, "SignatureVersion": JSON,
        "SigningCertURL": st.sampled_from([CERT_URL, "https://[::1", "https://sns.x:y/"]) | JSON,
        "TopicArn": st.just(TOPIC) | JSON, "Email": JSON, "Content": JSON,
    },
)  # fmt: skip


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(body=SHAPES | JSON, provider=st.sampled_from(["postmark", "mailgun", "ses"]))
async def test_no_body_gives_a_500_or_changes_anything(
    world: World, body: Any, provider: str
) -> None:
    before = state(world.engine)
    answer = await post(world.app, f"/webhooks/{provider}", json.dumps(body).encode(),
                        authorization=basic(PASSWORD))  # fmt: skip
    assert answer.status_code in {200, 400, 401}, answer.text
    assert state(world.engine) == before


async def test_a_huge_body_is_refused_unread(world: World) -> None:
    answer = await post(world.app, "/webhooks/ses", b"{" + b" " * (1024 * 1024) + b"}")
    assert answer.status_code == 413
