"""`mailer` commands for the long-running side and delivery: serve, worker, bounces, DKIM keys."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from mailer.cli import output
from mailer.cli.base import (
    app,
    open_engine,
    settings_from_options,
    utc_now,
)
from mailer.errors import InputError
from mailer.store.campaign import get_campaign

__all__ = ["bounces_app", "dkim_app"]


@app.command()
def serve() -> None:
    """Serve the web endpoints and run the scheduler, until Ctrl+C or SIGTERM."""
    import logging

    from double_optin.app import create_app
    from mailer.service import run_service

    settings = settings_from_options()
    settings.require_secret_keys()  # fail now, not on the first request
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not settings.sender.privacy_url:
        # GDPR art. 13: the signup page must say who processes the data and how; it does so
        # without it, but a link to the full statement is expected. Serving goes on.
        output.warning(
            "sender.privacy_url is not set; the signup page and the mail footers "
            "link no privacy statement (GDPR art. 13). Set it in the [sender] section."
        )
    with open_engine(settings) as engine:
        web = settings.web
        app = create_app(settings, engine)  # a DKIM key that does not load stops it here
        output.line(f"Serving {web.base_url} on http://{web.host}:{web.port} (Ctrl+C stops).")
        _run(run_service(settings, app))


def _run(main: Coroutine[Any, Any, None]) -> None:
    """`main` on uvloop's event loop where it is installed (not on Windows), else asyncio's:
    the web side spends less CPU per request on it (docs/performance.md)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# -- deliverability (issue 6): DKIM keys and a spam filter's verdict -------------------------

dkim_app = typer.Typer(help="DKIM signing keys.", no_args_is_help=True)
app.add_typer(dkim_app, name="dkim")


@dkim_app.command("keygen")
def dkim_keygen(
    selector: Annotated[str, typer.Option(help="DKIM selector, e.g. mail2026.")],
    domain: Annotated[str, typer.Option(help="Signing domain: your From domain or its parent.")],
    algorithm: Annotated[
        str, typer.Option(help="rsa (2048 bits, verified everywhere) or ed25519.")
    ] = "rsa",
    out: Annotated[Path, typer.Option(help="Folder for the key and the DNS record.")] = Path(
        "dkim"
    ),
) -> None:
    """Write a DKIM key pair and print the DNS TXT record to publish."""
    from mailer.delivery.dkimkeys import generate_key_pair

    if algorithm not in ("rsa", "ed25519"):
        raise InputError(f'--algorithm "{algorithm}" must be rsa or ed25519')
    made = generate_key_pair(selector, domain, "rsa" if algorithm == "rsa" else "ed25519", out)
    output.line(f"Private key written to {made.private_key_file} (mode 600; keep it secret).")
    output.line(f"Publish this DNS TXT record (also in {made.dns_file}):\n")
    output.raw(made.zone_record() + "\n")
    output.line("Then add to the settings file:\n")
    output.raw(
        f'[dkim]\nselector = "{selector.lower()}"\ndomain = "{domain.lower().rstrip(".")}"\n'
        f'private_key_file = "{made.private_key_file}"\nalgorithm = "{made.algorithm}"'
    )


bounces_app = typer.Typer(help="Bounces and mailto unsubscribes.", no_args_is_help=True)
app.add_typer(bounces_app, name="bounces")


@bounces_app.command("process")
def bounces_process(
    maildir: Annotated[
        Path | None, typer.Option(help="A Maildir folder (default: bounces.maildir or IMAP).")
    ] = None,
) -> None:
    """Read the bounce mailbox: suppress hard bounces, note soft ones, honour unsubscribes."""
    from mailer.delivery.bounces import process_mailbox

    settings = settings_from_options()
    with open_engine(settings) as engine:
        report = process_mailbox(engine, settings, now=utc_now(), maildir=maildir)
    output.line(f"Processed {sum(report.counts.values())} messages: {report.line()}.")


# -- privacy (issue 5): the person's rights, retention, consent proof -----------------------


@app.command()
def worker(
    campaign: Annotated[
        str | None, typer.Option(help="Send only this campaign (default: every running one).")
    ] = None,
    until_done: Annotated[
        bool,
        typer.Option(help="Exit once nothing is left to send, instead of waiting for more."),
    ] = False,
) -> None:
    """Send the queued deliveries of running campaigns, sharing the work and the rate with
    every other worker on any host. Stops cleanly on SIGTERM or Ctrl-C."""
    from mailer.delivery.worker import run_worker

    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign_id = get_campaign(engine, campaign).id if campaign else None

        async def work() -> dict[str, int]:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signal_number in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signal_number, stop.set)
            summary = await run_worker(
                engine, settings, campaign_id=campaign_id, until_done=until_done, stop=stop
            )
            return dict(summary.outcomes)

        outcomes = asyncio.run(work())
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())) or "nothing"
    output.line(f"Worker stopped: {counts}.")
