"""Delivery against a real SMTP server scripted to misbehave: each fault ends in the right state."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.delivery.dkimkeys import generate_key_pair
from mailer.delivery.sending import ServerUnreachable, run_campaign
from mailer.delivery.sink import DROP, CapturedMessage, SmtpSink
from mailer.store.campaign import create_campaign
from mailer.store.importer import import_contacts
from mailer.store.models import Contact, Delivery, Suppression
from tests.conftest import make_settings

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def seed(engine: Engine, settings: Settings, tmp_path: Path, emails: list[str]) -> None:
    lines = ["email,list,requested_at,confirmed_at"]
    lines += [f"{e},newsletter,2026-01-01T10:00:00,2026-01-01T10:05:00" for e in emails]
    csv = tmp_path / "contacts.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    import_contacts(engine, settings, csv, now=NOW)


def run(engine: Engine, settings: Settings, name: str) -> None:
    campaign = create_campaign(
        engine, settings, name=name, list_name="newsletter", subject="Nieuws",
        template="newsletter", category=None, now=NOW,
    )  # fmt: skip
    asyncio.run(run_campaign(engine, settings, campaign))


def ledger(engine: Engine, campaign_name: str) -> dict[str, tuple[str, int, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Contact.email, Delivery.status, Delivery.attempts, Delivery.smtp_reply)
            .join(Delivery, Delivery.contact_id == Contact.id)
            .where(Delivery.campaign_id == _campaign_id(engine, campaign_name))
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _campaign_id(engine: Engine, name: str) -> int:
    from mailer.store.campaign import get_campaign

    campaign_id = get_campaign(engine, name).id
    assert campaign_id is not None
    return campaign_id


def fault_settings(db_url: str, sink: SmtpSink, **throttle: float) -> Settings:
    return make_settings(
        db_url,
        smtp={"port": sink.port, "max_connections": 1, "timeout_seconds": 2},
        throttle={"retry_base_seconds": 0.05, "max_attempts": 3, **throttle},
    )


class Script:
    """Answers per recipient: a list of replies used one per attempt, then 250."""

    def __init__(self, plan: dict[str, list[str]]) -> None:
        self.plan = {k: list(v) for k, v in plan.items()}
        self.attempts: Counter[str] = Counter()

    def __call__(self, message: CapturedMessage) -> str | None:
        recipient = message.recipients[0]
        self.attempts[recipient] += 1
        answers = self.plan.get(recipient, [])
        return answers.pop(0) if answers else None


@pytest.mark.parametrize(
    ("replies", "status", "attempts"),
    [
        (["421 4.3.2 shutting down"], "sent", 2),
        (["451 4.3.0 try again later", "451 4.3.0 try again later"], "sent", 3),
        (["452 4.2.2 mailbox full"] * 5, "failed", 3),
        (["550 5.1.1 No such user"], "failed", 1),
        (["554 5.7.1 rejected as spam"], "failed", 1),
        ([DROP], "sent", 2),
    ],
    ids=["421-then-ok", "451-twice-then-ok", "452-out-of-attempts", "550-5.1.1", "554", "dropped"],
)
def test_each_reply_ends_in_the_right_ledger_state_with_the_right_attempts(
    db_url: str, engine: Engine, sink: SmtpSink, tmp_path: Path,
    replies: list[str], status: str, attempts: int,
) -> None:  # fmt: skip
    settings = fault_settings(db_url, sink)
    seed(engine, settings, tmp_path, ["fault@example.nl", "fine@example.nl"])
    sink.reply = Script({"fault@example.nl": replies})
    run(engine, settings, "faults")
    rows = ledger(engine, "faults")
    assert rows["fault@example.nl"][:2] == (status, attempts)
    assert rows["fine@example.nl"][:2] == ("sent", 1)
    delivered = Counter(m.recipients[0] for m in sink.messages)
    assert delivered["fault@example.nl"] == (1 if status == "sent" else 0)


def test_retries_wait_the_exponential_backoff(
    db_url: str, engine: Engine, sink: SmtpSink, tmp_path: Path
) -> None:
    settings = fault_settings(db_url, sink, retry_base_seconds=0.2)
    seed(engine, settings, tmp_path, ["slowpoke@example.nl"])
    sink.reply = Script({"slowpoke@example.nl": ["451 4.3.0 later", "451 4.3.0 later"]})
    start = time.monotonic()
    run(engine, settings, "backoff")
    assert time.monotonic() - start >= 0.2 + 0.4  # base, then doubled
    assert ledger(engine, "backoff")["slowpoke@example.nl"][:2] == ("sent", 3)


def test_next_campaign_skips_hard_bounces_but_not_soft_ones(
    db_url: str, engine: Engine, sink: SmtpSink, tmp_path: Path
) -> None:
    settings = fault_settings(db_url, sink)
    seed(engine, settings, tmp_path, ["gone@example.nl", "full@example.nl", "ok@example.nl"])
    sink.reply = Script(
        {"gone@example.nl": ["550 5.1.1 No such user"], "full@example.nl": ["452 4.2.2 full"] * 3}
    )
    run(engine, settings, "first")
    with engine.connect() as conn:
        assert conn.execute(select(Suppression.reason)).scalars().all() == ["hard_bounce"]
    sink.messages.clear()
    sink.reply = None
    run(engine, settings, "second")
    assert sorted(m.recipients[0] for m in sink.messages) == ["full@example.nl", "ok@example.nl"]
    assert ledger(engine, "second")["gone@example.nl"][0] == "skipped"


def test_a_slow_server_times_out_and_the_message_is_retried(
    db_url: str, engine: Engine, sink: SmtpSink, tmp_path: Path
) -> None:
    settings = make_settings(
        db_url,
        smtp={"port": sink.port, "max_connections": 1, "timeout_seconds": 0.3},
        # The retry comes after the server has woken up again.
        throttle={"retry_base_seconds": 1.0, "max_attempts": 3},
    )
    seed(engine, settings, tmp_path, ["patient@example.nl"])
    calls = Counter[str]()

    def slow_once(message: CapturedMessage) -> str | None:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.8)  # longer than the client's timeout
            return "451 4.4.1 too late anyway"
        return None

    sink.reply = slow_once
    run(engine, settings, "slow")
    status, attempts, _reply = ledger(engine, "slow")["patient@example.nl"]
    assert (status, attempts) == ("sent", 2)


def test_a_server_that_is_down_pauses_the_run_instead_of_burning_through_the_list(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    with SmtpSink() as probe_port:
        port = probe_port.port  # a port that nobody listens on once this sink stops
    settings = make_settings(
        db_url,
        smtp={"port": port, "max_connections": 2, "timeout_seconds": 1},
        throttle={"retry_base_seconds": 0.01, "max_attempts": 50, "max_pause_seconds": 2},
    )
    emails = [f"person{n}@example.nl" for n in range(60)]
    seed(engine, settings, tmp_path, emails)
    with pytest.raises(ServerUnreachable, match="has not answered for 2 s"):
        run(engine, settings, "down")
    rows = ledger(engine, "down")
    tried = [e for e, (_s, attempts, _r) in rows.items() if attempts]
    # The breaker opens after its window of 20 failures; never anywhere near the whole list.
    assert len(tried) <= 20 + 2
    assert all(status in ("queued", "deferred") for status, _a, _r in rows.values())


@pytest.mark.parametrize("dkim", [None, "ed25519"])  # with Ed25519 the signing process renders
def test_a_recipient_whose_message_cannot_be_rendered_fails_alone(
    db_url: str, engine: Engine, sink: SmtpSink, tmp_path: Path, dkim: str | None
) -> None:
    templates = tmp_path / "templates" / "campaigns" / "avatar"
    templates.mkdir(parents=True)
    (templates / "nl.html").write_text(
        '<html><body><p>Hallo</p><img alt="" src="{{ contact.first_name }}"></body></html>\n',
        encoding="utf-8",
    )
    (templates / "nl.txt").write_text("Hallo\n", encoding="utf-8")
    signing = {}
    if dkim is not None:
        key = generate_key_pair("ed", "bakkerij.example", "ed25519", tmp_path)
        signing = {"dkim": {"selector": "ed", "domain": "bakkerij.example",
                            "algorithm": "ed25519-sha256",
                            "private_key_file": str(key.private_key_file)}}  # fmt: skip
    settings = make_settings(
        db_url,
        templates_dir=str(tmp_path / "templates"),
        smtp={"port": sink.port, "max_connections": 1},
        **signing,
    )
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,first_name,list,confirmed_at\n"
        "good@example.nl,https://cdn.example/a.png,newsletter,2026-01-01T10:00:00\n"
        "bad@example.nl,http://insecure.example/a.png,newsletter,2026-01-01T10:00:00\n",
        encoding="utf-8",
    )
    import_contacts(engine, settings, csv, now=NOW)
    campaign = create_campaign(
        engine, settings, name="avatars", list_name="newsletter", subject="Hallo",
        template="avatar", category=None, now=NOW,
    )  # fmt: skip
    asyncio.run(run_campaign(engine, settings, campaign))
    rows = ledger(engine, "avatars")
    assert rows["good@example.nl"][0] == "sent"
    status, _attempts, reply = rows["bad@example.nl"]
    assert status == "failed"
    assert reply is not None and reply.startswith("not sent: ")
    assert [m.recipients[0] for m in sink.messages] == ["good@example.nl"]
