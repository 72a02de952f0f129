"""Campaign throughput against a bare aiosmtplib loop, on the same sink, same connections.

    ./dev bench                        or
    .venv/bin/python benchmarks/send_throughput.py [--recipients 10000] [--connections 4]

Throttling is off. The sink (aiosmtpd) runs in its own process. Prints messages/second of the
campaign's send phase and of the bare loop, and their ratio (aim: at least 0.60).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
from common import seed_consenting_contacts, sink_process, timer

from mailer.campaign import create_campaign
from mailer.config import parse_settings
from mailer.db import create_schema, make_engine
from mailer.demo import DEMO_CONFIG
from mailer.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.sending import run_campaign
from mailer.tokens import TokenSigner


async def bare_loop(port: int, count: int, connections: int, message: bytes) -> float:
    """The floor: pre-built bytes, one recipient per message, `connections` clients."""
    remaining = iter(range(count))

    async def client() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for n in remaining:
            await smtp.sendmail("nieuws@bakkerij.example", [f"person{n}@d.example"], message)
        await smtp.quit()

    start = timer()
    await asyncio.gather(*(client() for _ in range(connections)))
    return count / (timer() - start)


def campaign_rate(port: int, count: int, connections: int, folder: Path) -> tuple[float, float]:
    data = {
        **DEMO_CONFIG,
        "database": {"url": f"sqlite:///{folder / 'bench.db'}"},
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none",
                 "max_connections": connections},
        "throttle": {"messages_per_second": 0, "per_domain_per_minute": 0},
    }  # fmt: skip
    settings = parse_settings(data, source="<bench>")
    engine = make_engine(settings.database.url)
    create_schema(engine)
    seed_consenting_contacts(engine, count)
    campaign = create_campaign(
        engine, settings, name="bench", list_name="newsletter", subject="Benchmark",
        template="newsletter", category=None, now=datetime.now(UTC),
    )  # fmt: skip
    marks: dict[str, float] = {}
    start = timer()
    summary = asyncio.run(
        run_campaign(
            engine, settings, campaign, on_plan=lambda _plan: marks.setdefault("planned", timer())
        )
    )
    end = timer()
    engine.dispose()
    sent = summary.outcomes["sent"]
    assert sent == count, f"sent {sent} of {count}"
    return count / (end - marks["planned"]), count / (end - start)


def sample_message() -> bytes:
    """One message as the campaign renders it, so both loops send the same size."""
    settings = parse_settings({**DEMO_CONFIG, "database": {"url": "sqlite://"}}, source="<bench>")
    factory = MessageFactory(
        make_environment(settings),
        settings,
        CampaignContent("bench", "Benchmark", "newsletter", "newsletter"),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
    )
    recipient = Recipient(1, "person1@d1.example", "P1", None, "nl")
    return factory.render(recipient, basis="consent", now=datetime.now(UTC)).data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sink_process() as port:
        campaign_send, campaign_total = campaign_rate(
            port, args.recipients, args.connections, Path(tmp)
        )
        bare = asyncio.run(bare_loop(port, args.recipients, args.connections, sample_message()))
    print(f"recipients: {args.recipients}, connections: {args.connections}, throttle: off")
    print(f"bare aiosmtplib loop:      {bare:8.0f} messages/s")
    print(f"campaign, send phase:      {campaign_send:8.0f} messages/s")
    print(f"campaign, plan + send:     {campaign_total:8.0f} messages/s")
    print(f"ratio send phase / bare:   {campaign_send / bare:8.2f}  (aim >= 0.60)")


if __name__ == "__main__":
    main()
