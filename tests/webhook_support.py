"""What the webhook tests share: the providers' secrets, a certificate for SNS, the world
of four mailed subscribers, and the calls."""

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
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from sqlalchemy import Engine, select

from double_optin.app import create_app
from mailer.config import Settings, WebhookSettings
from mailer.core.policy import ConsentFact
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.models import ConsentEvent, ConsentOrigin, Contact, Delivery, Suppression
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign
from tests.web_support import FakeClock, client

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


async def make_world(engine: Engine, sink: SmtpSink, db_url: str) -> World:
    """Four subscribers mailed by campaign "nov" through the sink, and the app that hears back."""
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


@pytest.fixture(name="world")
async def world_fixture(engine: Engine, sink: SmtpSink, db_url: str) -> World:
    """`make_world` as the fixture `world`, for the webhook tests of every provider (imported
    by its own name, so the tests' `world` parameters shadow no import)."""
    return await make_world(engine, sink, db_url)


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
