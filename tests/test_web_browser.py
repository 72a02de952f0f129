"""End to end in a real headless Chromium (Debian's package, driven by Playwright).

A real uvicorn serves the app on a free loopback port; a real aiosmtpd server catches the mail.
Screenshots of every page go to the test's tmp folder and to ./test-output/ (gitignored).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine

from double_optin.app import create_app
from mailer.config import Settings
from mailer.delivery.sink import SmtpSink, _free_port
from mailer.store.db import create_schema, make_engine
from mailer.store.suppression import is_suppressed
from tests.conftest import make_settings
from tests.web_support import body_text, parsed, rows, send_campaign_now, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADDRESS = "lotte@example.nl"
SHARED_OUTPUT = Path(__file__).resolve().parent.parent / "test-output"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium "
        "(`./dev test` installs it when run as root: apt-get install chromium)",
    ),
]


@dataclass
class LiveSite:
    url: str
    settings: Settings
    engine: Engine


@pytest.fixture
def site(tmp_path: Path, sink: SmtpSink) -> Iterator[LiveSite]:
    port = _free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    settings = make_settings(
        f"sqlite:///{tmp_path / 'web.db'}", smtp={"port": sink.port}, web={"base_url": url}
    )
    engine = make_engine(settings.database.url)
    create_schema(engine)
    config = uvicorn.Config(
        create_app(settings, engine), host="127.0.0.1", port=port, log_level="warning",
        access_log=False, lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    try:
        yield LiveSite(url, settings, engine)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def now() -> datetime:
    return datetime.now(UTC)


def run_campaign_in_thread(site: LiveSite, name: str) -> dict[str, str]:
    """Playwright's sync API keeps an event loop in this thread; the run gets its own thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        job = pool.submit(asyncio.run, send_campaign_now(site.engine, site.settings, now, name))
        return job.result(timeout=60)


def trail(site: LiveSite) -> list[tuple[str, str, str]]:
    """(list, event, origin) of every consent event stored, oldest first."""
    return [(r["list_name"], r["event"], r["origin"]) for r in rows(site.engine, "consent")]


def suppressed_for(site: LiveSite, list_name: str) -> bool:
    with site.engine.connect() as conn:
        return is_suppressed(conn, site.settings.require_secret_keys(), ADDRESS, list_name)


def test_signup_confirm_campaign_unsubscribe_in_a_real_browser(
    site: LiveSite, sink: SmtpSink, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            phone = browser.new_context(viewport={"width": 390, "height": 844})
            page = phone.new_page()
            page.set_default_timeout(15_000)

            def shot(name: str) -> None:  # for people looking at the pages; nothing asserted
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

            # 1. The form: every list with its wording, each box unticked; tick one, submit.
            page.goto(f"{site.url}/subscribe")
            expect(page.locator("html")).to_have_attribute("lang", "nl")
            expect(page.get_by_label("E-mailadres")).to_be_visible()
            for name, wording in (("newsletter", site.settings.lists["newsletter"].wording),
                                  ("offers", site.settings.lists["offers"].wording)):  # fmt: skip
                expect(page.locator(f"label[for=list-{name}]")).to_contain_text(wording)
                expect(page.locator(f"#list-{name}")).not_to_be_checked()
            shot("01-subscribe")
            page.get_by_label("E-mailadres").fill(ADDRESS)
            page.locator("#list-newsletter").check()
            page.get_by_role("button", name="Aanmelden").click()
            expect(page.locator("h1")).to_have_text("Kijk in je mailbox")
            shot("02-check-your-inbox")
            assert trail(site) == [("newsletter", "requested", "web")]  # pending, not consent

            # 2. The confirmation mail arrives; its link opens a page with a button. Opening
            #    it changes nothing (link scanners fetch GETs); the button confirms.
            wait_for(lambda: any(m["To"] == ADDRESS for m in parsed(sink)))
            [mail] = [m for m in parsed(sink) if m["To"] == ADDRESS]
            [link] = re.findall(rf"{re.escape(site.url)}/confirm/\S+", body_text(mail))
            page.goto(link)
            expect(page.locator("h1")).to_have_text("Bevestig je aanmelding")
            expect(page.locator("main li")).to_have_text([site.settings.lists["newsletter"].title])
            shot("03-confirm")
            assert trail(site) == [("newsletter", "requested", "web")]
            page.get_by_role("button", name="Ja, ik bevestig mijn aanmelding").click()
            expect(page.locator("h1")).to_have_text("Bedankt, je aanmelding is bevestigd")
            shot("04-confirmed")
            assert trail(site) == [("newsletter", "requested", "web"),
                                   ("newsletter", "confirmed", "web")]  # fmt: skip

            # 3. A campaign now reaches them; its footer names the sender (rule 2) and its
            #    unsubscribe link opens the unsubscribe page.
            first = run_campaign_in_thread(site, "welkom")
            assert first == {ADDRESS: "sent"}
            [news] = [m for m in parsed(sink) if m["List-Unsubscribe"] is not None]
            html = news.get_body(preferencelist=("html",))
            assert html is not None
            page.set_content(html.get_content())  # type: ignore[attr-defined]
            expect(page.locator("body")).to_contain_text(site.settings.sender.organization)
            expect(page.locator("body")).to_contain_text(site.settings.sender.postal_address)
            shot("05-campaign-mail")
            page.get_by_role("link", name="Afmelden").click()
            expect(page.locator("h1")).to_have_text("Afmelden")
            assert page.url.startswith(f"{site.url}/unsubscribe/")
            expect(page.locator("#scope-newsletter")).to_be_checked()  # the list of this mail
            shot("06-unsubscribe")
            assert not suppressed_for(site, "newsletter")  # opening the page changed nothing
            page.get_by_role("button", name="Afmelden").click()
            expect(page.locator("h1")).to_have_text("Je bent afgemeld")
            expect(page.locator("main li")).to_have_text([site.settings.lists["newsletter"].title])
            shot("07-unsubscribed")
            assert suppressed_for(site, "newsletter")

            # The pages render in English too, and on a desktop-sized window.
            desktop = browser.new_context(viewport={"width": 1280, "height": 800})
            page = desktop.new_page()
            page.goto(f"{site.url}/subscribe?lang=en")
            expect(page.locator("html")).to_have_attribute("lang", "en")
            expect(page.get_by_label("E-mail address")).to_be_visible()
            expect(page.get_by_role("button", name="Subscribe")).to_be_visible()
            shot("08-subscribe-en-desktop")
            forged = page.goto(f"{site.url}/confirm/forged-token")
            assert forged is not None and forged.status == 400
            expect(page.locator("h1")).to_have_text("Deze link klopt niet")
            shot("09-forged-link")
        finally:
            browser.close()

    # 4. The next campaign skips them; nothing more was mailed.
    second = run_campaign_in_thread(site, "daarna")
    assert second == {ADDRESS: "skipped:suppressed"}
    assert len([m for m in parsed(sink) if m["List-Unsubscribe"] is not None]) == 1

    SHARED_OUTPUT.mkdir(exist_ok=True)
    for picture in shots.iterdir():
        shutil.copy(picture, SHARED_OUTPUT / picture.name)
