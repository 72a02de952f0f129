"""Relay webhooks through the real ASGI app: bodies from the providers' documented examples,
signed in the test with keys and a certificate the test makes."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from double_optin.app import create_app
from double_optin.sns import string_to_sign
from mailer.config import Settings, WebhookSettings
from mailer.core.policy import ConsentFact
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.models import ConsentEvent, ConsentOrigin, Contact, Delivery, Suppression
from tests.conftest import SECRET, make_settings
from tests.factories import add_contact, new_campaign
from tests.web_support import FakeClock, client

pytestmark = pytest.mark.anyio
DATA = Path(__file__).parent / "data" / "webhooks"
JAN = datetime(2026, 1, 1, tzinfo=UTC)
PEOPLE = ("anna@example.nl", "bram@example.nl", "cees@example.nl", "dirk@example.nl")
PASSWORD = "postmark-webhook-password-0123456789"
SIGNING_KEY = "key-mailgun-signing-0123456789abcdef"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:mailer-feedback"
CERT_URL = (
    "https://sns.eu-west-1.amazonaws.com/"
    "SimpleNotificationService-7506a1e35b36ef5a444dd1a8e7cc3ed8.pem"
)


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Fetcher:
    """Serves the test's SNS certificate and answers subscription confirmations."""

    def __init__(self) -> None:
        self.fetched: list[str] = []
        self.pem = _certificate(SNS_KEY)

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == CERT_URL:
            return self.pem
        return b"<ConfirmSubscriptionResponse/>"


@dataclass
class World:
    app: FastAPI
    engine: Engine
    settings: Settings
    clock: FakeClock
    fetcher: Fetcher
    message_ids: dict[str, str]


@pytest.fixture
async def world(engine: Engine, sink: SmtpSink, db_url: str) -> World:
    settings = make_settings(db_url, smtp={"port": sink.port}).model_copy(
        update={
            "postmark_webhook_password": PASSWORD,
            "mailgun_signing_key": SIGNING_KEY,
            "webhooks": WebhookSettings(ses_topic_arns=(TOPIC,)),
        }
    )
    subscribed = [
        ConsentFact(name, event, ConsentOrigin.WEB, JAN)
        for name in ("newsletter", "offers")
        for event in (ConsentEvent.REQUESTED, ConsentEvent.CONFIRMED)
    ]
    for address in PEOPLE:
        add_contact(engine, settings, address, at=JAN, consents=subscribed)
    clock = FakeClock(datetime(2026, 11, 16, 9, tzinfo=UTC))
    await run_campaign(
        engine, settings, new_campaign(engine, settings, "nov", at=clock()), clock=clock
    )
    ids = {
        m.recipients[0]: str(email.message_from_bytes(m.data)["Message-ID"]) for m in sink.messages
    }
    fetcher = Fetcher()
    app = create_app(settings, engine, clock=clock, fetch=fetcher)
    return World(app, engine, settings, clock, fetcher, ids)


def state(engine: Engine) -> tuple[list[tuple[str, str | None]], dict[str, tuple[str, str | None]]]:
    """(suppressions, {email: (delivery status, feedback)}): what a call may change."""
    with engine.connect() as conn:
        suppressed = sorted((r.reason, r.scope) for r in conn.execute(select(Suppression)))
        ledger = {
            r.email: (r.status, r.feedback)
            for r in conn.execute(
                select(Contact.email, Delivery.status, Delivery.feedback).join(
                    Delivery,
                    Delivery.contact_id == Contact.id,  # type: ignore[arg-type]
                )
            )
        }
    return suppressed, ledger


def example(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    data.update(changes)
    return data


async def post(
    app: FastAPI, path: str, body: bytes | dict[str, Any], **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client(app, ip="203.0.113.7") as web:
        return await web.post(path, content=content, headers=headers)


def basic(password: str, user: str = "postmark") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- Postmark ------------------------------------------------------------------------------


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


def mailgun(
    name: str,
    world: World,
    recipient: str,
    *,
    token: str,
    age: float = 0,
    key: str = SIGNING_KEY,
    event_id: str | None = None,
) -> dict[str, Any]:
    body = example(name)
    timestamp = str(int(world.clock().timestamp() - age))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    body["signature"] = {"timestamp": timestamp, "token": token, "signature": signature}
    event = body["event-data"]
    event["recipient"] = recipient
    event["message"]["headers"]["message-id"] = world.message_ids[recipient].strip("<>")
    if event_id:
        event["id"] = event_id
    return body


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


def sns(
    message_type: str,
    world: World,
    *,
    message: str,
    message_id: str,
    version: str = "1",
    key: rsa.RSAPrivateKey = SNS_KEY,
    **fields: str,
) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "Type": message_type,
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": "2026-11-16T09:12:38.655Z",
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        **fields,
    }
    if message_type == "Notification":
        envelope["UnsubscribeURL"] = (
            "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
            f"{TOPIC}:c9135db0-26c4-47ec-8998-413945fb5a96"
        )
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    envelope["Signature"] = base64.b64encode(signature).decode()
    return envelope


def ses(name: str, world: World, recipient: str) -> str:
    notification = example(name)
    message_id = world.message_ids[recipient]
    notification["mail"]["commonHeaders"]["messageId"] = message_id
    notification["mail"]["headers"][2]["value"] = message_id
    for people in ("bouncedRecipients", "complainedRecipients"):
        for person in notification.get(name.split("-")[1].split(".")[0], {}).get(people, []):
            person["emailAddress"] = recipient
    return json.dumps(notification)


async def test_ses_subscription_is_confirmed_by_its_subscribe_url(world: World) -> None:
    subscribe = (
        f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
        f"{TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de12884c4"
    )
    body = sns(
        "SubscriptionConfirmation",
        world,
        message="You have chosen to subscribe.",
        message_id="165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        SubscribeURL=subscribe,
        Token="2336412f37fb687f5d51e6e2425c464de12884c4",
    )
    answer = await post(world.app, "/webhooks/ses", body, **{"content-type": "text/plain"})
    assert (answer.status_code, answer.json()) == (200, {"status": "subscribed"})
    assert world.fetcher.fetched == [CERT_URL, subscribe]


async def test_ses_bounces_and_complaints_signed_by_sns_are_recorded_once(world: World) -> None:
    bounce = sns(
        "Notification",
        world,
        message=ses("ses-bounce.json", world, "anna@example.nl"),
        message_id="22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    )
    complaint = sns(
        "Notification",
        world,
        version="2",
        message=ses("ses-complaint.json", world, "bram@example.nl"),
        message_id="5f2c7e01-24c4-4d3b-9b1c-3e6bdb8c6f01",
    )
    for body, counted in ((bounce, {"hard_bounce": 1}), (complaint, {"complaint": 1})):
        answer = await post(world.app, "/webhooks/ses", body, **{"content-type": "text/plain"})
        assert (answer.status_code, answer.json()) == (
            200,
            {"status": "recorded", "counted": counted},
        )
    recorded = state(world.engine)
    assert recorded[0] == [("complaint", None), ("hard_bounce", None)]
    assert recorded[1]["anna@example.nl"] == ("failed", "hard_bounce")
    assert recorded[1]["bram@example.nl"] == ("sent", "complaint")
    again = await post(world.app, "/webhooks/ses", bounce)  # SNS retries
    assert again.json() == {"status": "already_recorded"}
    assert state(world.engine) == recorded
    assert world.fetcher.fetched == [CERT_URL]  # fetched once, then cached


async def test_ses_refuses_what_sns_did_not_sign(world: World) -> None:
    before = state(world.engine)
    message = ses("ses-bounce.json", world, "anna@example.nl")
    other_signer = sns("Notification", world, message=message, message_id="m-1", key=OTHER_KEY)
    tampered = sns("Notification", world, message=message, message_id="m-2")
    tampered["Message"] = ses("ses-bounce.json", world, "cees@example.nl")
    own_certificate = sns(
        "Notification",
        world,
        message=message,
        message_id="m-3",
        SigningCertURL="https://evil.example/SimpleNotificationService.pem",
    )
    plain_http = sns(
        "Notification",
        world,
        message=message,
        message_id="m-4",
        SigningCertURL=CERT_URL.replace("https:", "http:"),
    )
    lookalike = sns(
        "Notification",
        world,
        message=message,
        message_id="m-5",
        SigningCertURL=CERT_URL.replace(".com/", ".com.evil.example/"),
    )
    foreign_topic = sns(
        "Notification",
        world,
        message=message,
        message_id="m-6",
        TopicArn="arn:aws:sns:eu-west-1:999999999999:someone-else",
    )
    unsigned = dict(tampered)
    del unsigned["Signature"]
    for body in (
        other_signer,
        tampered,
        own_certificate,
        plain_http,
        lookalike,
        foreign_topic,
        unsigned,
    ):
        answer = await post(world.app, "/webhooks/ses", body)
        assert answer.status_code == 401, answer.text
    assert state(world.engine) == before
    assert set(world.fetcher.fetched) <= {CERT_URL}  # never a certificate from elsewhere


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
