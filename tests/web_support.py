"""Helpers for the web tests: a movable clock, mail parsing, campaign runs against the sink."""

from __future__ import annotations

import email
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlmodel import SQLModel

from mailer.config import Settings
from mailer.delivery.sending import run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.campaign import create_campaign

BASE = "https://bakkerij.example"
_CONFIRM = re.compile(r"https://bakkerij\.example/confirm/[A-Za-z0-9._-]+")
_UNSUBSCRIBE = re.compile(r"<(https://bakkerij\.example/unsubscribe/[A-Za-z0-9._-]+)>")


class FakeClock:
    """Time that only moves when a test says so."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def client(app: FastAPI, ip: str = "192.0.2.10") -> httpx.AsyncClient:
    """An httpx client talking to the app in-process, as if from `ip`."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50123))
    return httpx.AsyncClient(
        transport=transport,
        base_url=BASE,
        headers={"user-agent": "Mozilla/5.0 (test)"},
        follow_redirects=False,
    )


def parsed(sink: SmtpSink) -> list[EmailMessage]:
    with sink.lock:
        data = [m.data for m in sink.messages]
    return [email.message_from_bytes(d, policy=default) for d in data]  # type: ignore[misc]


def body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def confirmations(sink: SmtpSink, address: str) -> list[EmailMessage]:
    """Confirmation mails to `address` (they carry no List-Unsubscribe: not marketing)."""
    return [m for m in parsed(sink) if m["To"] == address and m["List-Unsubscribe"] is None]


def marketing_to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [
        m for m in parsed(sink) if m["List-Unsubscribe"] is not None and address in str(m["To"])
    ]


def confirm_path(message: EmailMessage) -> str:
    found = _CONFIRM.findall(body_text(message))
    assert len(found) == 1, found
    return str(found[0])[len(BASE) :]


def unsubscribe_path(message: EmailMessage) -> str:
    found = _UNSUBSCRIBE.search(str(message["List-Unsubscribe"]))
    assert found is not None
    return found.group(1)[len(BASE) :]


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Poll `condition()` (the mail goes out after the answer, on another connection)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.02)


async def send_campaign_now(
    engine: Engine,
    settings: Settings,
    clock: Callable[[], datetime],
    name: str,
    list_name: str = "newsletter",
) -> dict[str, str]:
    """Create and run a campaign; returns {email: ledger status or skip reason}."""
    campaign = create_campaign(
        engine,
        settings,
        name=name,
        list_name=list_name,
        subject="Nieuws van de bakker",
        template="newsletter",
        category=None,
        now=clock(),
    )
    await run_campaign(engine, settings, campaign, clock=clock)
    return ledger(engine, campaign.id or 0)


def ledger(engine: Engine, campaign_id: int) -> dict[str, str]:
    delivery = SQLModel.metadata.tables["delivery"]
    contact = SQLModel.metadata.tables["contact"]
    query = (
        select(contact.c.email, delivery.c.status, delivery.c.skip_reason)
        .join(contact, contact.c.id == delivery.c.contact_id)
        .where(delivery.c.campaign_id == campaign_id)
    )
    with engine.connect() as conn:
        return {
            row.email: row.status if row.status != "skipped" else f"skipped:{row.skip_reason}"
            for row in conn.execute(query)
        }


def rows(engine: Engine, table: str) -> list[dict[str, Any]]:
    t = SQLModel.metadata.tables[table]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.id))]
