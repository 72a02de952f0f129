"""Transactional mail is DKIM-signed like campaign mail: the confirmation, the welcome and the
unsubscribe acknowledgement, as a person's signup and unsubscribe produce them through the web
app, each verified by dkimpy against the published records; a key that does not load stops
the web app at its start."""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.delivery.dkimkeys import generate_key_pair
from mailer.delivery.sink import SmtpSink
from mailer.errors import ConfigError
from tests.conftest import BASE_CONFIG, make_settings
from tests.dkim_support import dual_dkim, verifies
from tests.process_support import free_port, mailer
from tests.project_files import settings_toml
from tests.web_support import BASE, FakeClock, body_text, client, confirm_path, parsed, wait_for

pytestmark = pytest.mark.anyio
JAN = "jan@example.nl"
ONE_CLICK = {
    "content": b"List-Unsubscribe=One-Click",
    "headers": {"content-type": "application/x-www-form-urlencoded"},
}


def raw(sink: SmtpSink, message: EmailMessage) -> bytes:
    """The bytes the server received for `message` (what a receiver verifies)."""
    [data] = [m.data for m in sink.messages if m.data.find(str(message["Message-ID"]).encode()) > 0]
    return data


async def test_confirmation_welcome_and_acknowledgement_carry_both_signatures(
    engine: Engine, db_url: str, sink: SmtpSink, tmp_path: Path
) -> None:
    rsa = generate_key_pair("rsa2026", "bakkerij.example", "rsa", tmp_path)
    ed = generate_key_pair("ed2026", "bakkerij.example", "ed25519", tmp_path)
    newsletter = {**BASE_CONFIG["lists"]["newsletter"], "welcome": True}
    settings = make_settings(
        db_url, smtp={"port": sink.port}, dkim=dual_dkim(rsa, ed),
        lists={**BASE_CONFIG["lists"], "newsletter": newsletter},
        policy={"jurisdiction": "NL", "unsubscribe_ack": True},
    )  # fmt: skip
    app = create_app(settings, engine, clock=FakeClock())
    async with client(app) as web:
        await web.post("/subscribe", data={"email": JAN, "lists": ["newsletter"], "website": ""})
        [confirmation] = parsed(sink)
        assert (await web.post(confirm_path(confirmation))).status_code == 200
        wait_for(lambda: len(sink.messages) == 2)
        welcome = parsed(sink)[1]
        [link] = re.findall(rf"{re.escape(BASE)}(/unsubscribe/\S+)", body_text(welcome))
        assert (await web.post(link, **ONE_CLICK)).status_code == 200  # type: ignore[arg-type]
        wait_for(lambda: len(sink.messages) == 3)
    acknowledgement = parsed(sink)[2]
    assert str(acknowledgement["Subject"]).startswith("Afmelding bevestigd")

    for message in (confirmation, welcome, acknowledgement):
        data = raw(sink, message)
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        assert b"s=ed2026" in data.split(b"\r\n\r\n")[0]
        assert verifies(data, [rsa, ed]) == [True, True], message["Subject"]
        # The signature covers what the person reads: a changed body fails both.
        head, _, body = data.partition(b"\r\n\r\n")
        assert verifies(head + b"\r\n\r\n" + body.replace(b"e", b"E", 1), [rsa, ed]) == [
            False,
            False,
        ]


async def test_without_dkim_transactional_mail_goes_unsigned(
    engine: Engine, send_settings: Any, sink: SmtpSink
) -> None:
    async with client(create_app(send_settings, engine, clock=FakeClock())) as web:
        await web.post("/subscribe", data={"email": JAN, "lists": ["newsletter"], "website": ""})
    [data] = [m.data for m in sink.messages]
    assert b"DKIM-Signature" not in data


def test_a_key_that_does_not_load_stops_the_web_app_at_its_start(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    rsa = generate_key_pair("rsa2026", "bakkerij.example", "rsa", tmp_path)
    ed = generate_key_pair("ed2026", "bakkerij.example", "ed25519", tmp_path)
    ed.private_key_file.write_bytes(b"not a key\n")
    settings = make_settings(db_url, dkim=dual_dkim(rsa, ed))
    with pytest.raises(ConfigError) as caught:
        create_app(settings, engine, clock=FakeClock())
    assert 'key "dkim.second_private_key_file"' in str(caught.value)
    assert str(ed.private_key_file) in str(caught.value)


def test_serve_with_a_key_that_does_not_load_exits_2_before_it_says_it_serves(
    tmp_path: Path,
) -> None:
    rsa = generate_key_pair("rsa2026", "bakkerij.example", "rsa", tmp_path)
    missing = tmp_path / "gone.key"
    section = (
        f'[dkim]\nselector = "rsa2026"\ndomain = "bakkerij.example"\n'
        f'private_key_file = "{rsa.private_key_file}"\nsecond_selector = "ed2026"\n'
        f'second_private_key_file = "{missing}"\n'
    )
    config = tmp_path / "mailer.toml"
    web = f"[web]\nport = {free_port()}\n"
    config.write_text(
        settings_toml(2525, f"sqlite:///{tmp_path / 'm.db'}", extra=web + section),
        encoding="utf-8",
    )
    assert mailer(config, "init").returncode == 0
    served = mailer(config, "serve")  # returns at once; a hang would hit the timeout
    assert served.returncode == 2
    assert 'key "dkim.second_private_key_file"' in served.stderr
    assert str(missing) in served.stderr
    assert "Serving" not in served.stdout
