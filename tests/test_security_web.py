"""The web door under attack (issue 14, rows 2, 7 and 9): through HTTP against the real app."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from double_optin.app import create_app
from double_optin.pages import SECURITY_HEADERS
from mailer.config import Settings
from mailer.core.tokens import TokenSigner
from mailer.delivery.sink import SmtpSink
from mailer.store.db import make_engine
from tests.conftest import SECRET, make_settings
from tests.web_support import FakeClock, client, rows

pytestmark = pytest.mark.anyio
JAN = "jan@example.nl"
FORGED_BLOCK = "https://shop.example/\n\nconfirmed (web)\n  ip: 203.0.113.66\x1b[2J"


@pytest.fixture
def app(engine: Engine, send_settings: Settings) -> FastAPI:
    return create_app(send_settings, engine, clock=FakeClock())


@pytest.fixture
async def web(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app) as http:
        yield http


def has_security_headers(answer: httpx.Response) -> bool:
    # The signup form alone may name its origin on its own POST (Referrer-Policy same-origin).
    allowed = {n.decode(): {v.decode()} for n, v in SECURITY_HEADERS}
    if answer.request.url.path == "/subscribe":
        allowed["referrer-policy"].add("same-origin")
    return all(answer.headers.get(name) in values for name, values in allowed.items())


async def test_a_source_url_with_line_breaks_and_esc_is_refused_and_nothing_stored(
    web: httpx.AsyncClient, engine: Engine
) -> None:
    for source in (FORGED_BLOCK, "https://shop.example/\u202eevil", "https://x.example/\x00"):
        body = {"email": JAN, "lists": ["newsletter"], "source_url": source}
        answer = await web.post("/api/subscribe", json=body)
        assert answer.status_code == 400, source
        assert answer.json()["error"] == "control_characters"
        assert "source_url holds control characters" in answer.json()["detail"]
    assert rows(engine, "contact") == [] and rows(engine, "consent") == []


async def test_a_user_agent_with_control_characters_is_refused_at_signup(
    web: httpx.AsyncClient, engine: Engine
) -> None:
    data = {"email": JAN, "lists": "newsletter"}
    answer = await web.post("/subscribe", data=data, headers={b"user-agent": b"Mozilla\x85\x9b[2J"})
    assert answer.status_code == 400
    assert "Er is niets opgeslagen" in answer.text
    assert has_security_headers(answer)
    assert rows(engine, "consent") == []


async def test_an_unsubscribe_is_never_refused_its_odd_user_agent_is_stored_escaped(
    web: httpx.AsyncClient, engine: Engine
) -> None:
    await web.post("/subscribe", data={"email": JAN, "lists": "newsletter"})
    token = TokenSigner([SECRET]).unsubscribe_token(rows(engine, "contact")[0]["id"], "newsletter")
    answer = await web.post(
        f"/unsubscribe/{token}",
        data={"List-Unsubscribe": "One-Click"},
        headers={b"user-agent": b"Mail\x9b31m\tx"},
    )
    assert answer.status_code == 200
    withdrawn = [e for e in rows(engine, "consent") if e["event"] == "withdrawn"]
    assert [e["user_agent"] for e in withdrawn] == ["Mail\\u009b31m\\tx"]


async def test_a_crash_answers_500_with_the_security_headers_and_logs_no_personal_data(
    tmp_path: Path, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    # A database without tables: every write fails inside SQLAlchemy with the row in hand.
    broken = make_settings(f"sqlite:///{tmp_path / 'empty.db'}", smtp={"port": sink.port})
    engine = make_engine(broken.database.url)
    user_agent = "Mozilla/5.0 (Private Agent 7.1)"
    with caplog.at_level(logging.DEBUG):
        async with client(create_app(broken, engine), ip="198.51.100.77") as web:
            answer = await web.post(
                "/subscribe", data={"email": JAN, "lists": "newsletter"},
                headers={"user-agent": user_agent},
            )  # fmt: skip
            token = TokenSigner([SECRET]).unsubscribe_token(1, "newsletter")
            unsubscribe = await web.post(f"/unsubscribe/{token}", data={"scope": "newsletter"})
    engine.dispose()
    assert answer.status_code == 500 and unsubscribe.status_code == 500
    assert has_security_headers(answer) and has_security_headers(unsubscribe)
    # What the server logged (not the test's own HTTP client, nor the SMTP sink).
    logged = "\n".join(
        r.getMessage() + (r.exc_text or "")
        for r in caplog.records
        if not r.name.startswith(("httpx", "mail.log"))
    )
    assert "POST /subscribe failed: OperationalError" in logged
    for secret in (JAN, "198.51.100.77", user_agent, token):
        assert secret not in logged


@pytest.mark.parametrize("path", ["/subscribe/", "/healthz/", "/api/lists/"])
async def test_a_trailing_slash_is_not_found_never_a_redirect_to_the_host_header(
    web: httpx.AsyncClient, path: str
) -> None:
    answer = await web.get(path, headers={"host": "evil.example"})
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert has_security_headers(answer)


async def test_a_one_click_post_with_a_trailing_slash_is_not_found(
    web: httpx.AsyncClient,
) -> None:
    token = TokenSigner([SECRET]).unsubscribe_token(1, "newsletter")
    answer = await web.post(f"/unsubscribe/{token}/", data={"List-Unsubscribe": "One-Click"},
                            headers={"host": "evil.example"})  # fmt: skip
    assert answer.status_code == 404 and "location" not in answer.headers


# --- no input gives a 500 ------------------------------------------------------------------

_text = st.text(max_size=40) | st.sampled_from(["newsletter", "offers", JAN, "\x00", "\ud800"])
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_json_body = st.fixed_dictionaries(
    {},
    optional={
        "email": _json_value, "lists": _json_value, "locale": _json_value,
        "source_url": _json_value | st.just("https://x.example/\x00"), "website": _json_value,
    },
) | _json_value  # fmt: skip
_form_body = st.lists(
    st.tuples(st.sampled_from(["email", "lists", "website", "scope", "renew"]) | _text, _text),
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_json_body, form=_form_body, ua=st.text(max_size=20))
def test_no_generated_form_or_json_body_gives_a_500(
    db_url: str, engine: Engine, sink: SmtpSink, body: object, form: list[tuple[str, str]], ua: str
) -> None:
    quiet = make_settings(db_url, smtp={"port": sink.port}, web={"signups_per_ip_per_hour": 0})
    app = create_app(quiet, engine, clock=FakeClock())
    token = TokenSigner([SECRET]).unsubscribe_token(1, "newsletter")
    # A header value is bytes on the wire: what h11 lets through, latin-1 decoded.
    header = ua.encode("utf-8", "replace").decode("latin-1")
    header = "".join(c for c in header if c == "\t" or " " <= c <= "~" or c >= "\x80")
    header_bytes = header.encode("latin-1")
    encoded = urlencode(form, errors="surrogatepass").encode()
    json_headers = {b"content-type": b"application/json", b"user-agent": header_bytes}
    form_headers = {
        b"content-type": b"application/x-www-form-urlencoded",
        b"user-agent": header_bytes,
    }

    async def probe() -> list[httpx.Response]:
        async with client(app) as web:
            raw = json.dumps(body, ensure_ascii=True).encode()
            return [
                await web.post("/api/subscribe", content=raw, headers=json_headers),
                await web.post("/subscribe", content=encoded, headers=form_headers),
                await web.post("/confirm/" + token, content=encoded, headers=form_headers),
                await web.post("/unsubscribe/" + token, content=encoded, headers=form_headers),
            ]  # fmt: skip

    for answer in anyio.run(probe):
        assert answer.status_code < 500, (answer.request.url, answer.text)
        assert has_security_headers(answer)
