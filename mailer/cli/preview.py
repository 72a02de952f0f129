"""`mailer campaign preview` and `mailer campaign test`: look at a campaign before it goes out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli import output
from mailer.cli.base import campaign_app, open_engine, settings_from_options, utc_now
from mailer.store.campaign import get_campaign

__all__: list[str] = []  # commands register themselves on the app


@campaign_app.command("preview")
def campaign_preview(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    email: Annotated[
        str | None, typer.Option(help="The contact to render it for (default: a sample person).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the .eml (default: preview-NAME.eml).")
    ] = None,
) -> None:
    """Write the exact message ADDR would get now (.eml, and its HTML part as .html beside
    it) and print the decision: the basis it would be sent on, or the skip reason."""
    from mailer.delivery.preview import html_part, preview

    settings = settings_from_options()
    with open_engine(settings) as engine:
        result = preview(engine, settings, get_campaign(engine, name), email, utc_now())
    for line in result.lines(name):
        output.line(line)
    if result.message is None:
        return
    eml = out or Path(f"preview-{name}.eml")
    eml.write_bytes(result.message)
    written = [str(eml)]
    html = html_part(result.message)
    if html is not None:
        eml.with_suffix(".html").write_text(html, encoding="utf-8")
        written.append(str(eml.with_suffix(".html")))
    output.line(
        f"Written: {', '.join(written)}. Its unsubscribe link works: do not click it for a "
        "real person."
    )


@campaign_app.command("test")
def campaign_test(
    name: Annotated[str, typer.Argument(help="Campaign name.")],
    to: Annotated[
        list[str], typer.Option("--to", help="An address in sender.test_addresses; repeatable.")
    ],
) -> None:
    """Send the message with subject "[TEST] ..." to your own addresses (sender.test_addresses
    only). Not a delivery: reports do not count it. Exit 1 if the server refused one."""
    from mailer.delivery.preview import send_test

    settings = settings_from_options()
    with open_engine(settings) as engine:
        campaign = get_campaign(engine, name)
    results = asyncio.run(send_test(settings, campaign, to, utc_now()))
    for address, accepted in results:
        said = "accepted by the server" if accepted else "REFUSED by the server (see the log)"
        output.line(f"Test of {name} to {address}: {said}.")
    if not all(accepted for _address, accepted in results):
        raise typer.Exit(1)
