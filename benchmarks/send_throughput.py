"""Campaign throughput against a bare aiosmtplib loop, on the same sink, same connections.

    ./dev bench                        or
    .venv/bin/python benchmarks/send_throughput.py [--recipients 10000] [--connections 4]
        [--dkim rsa|ed25519]

With --dkim every campaign message is DKIM-signed (a key made for the run), and the cost of
signing one message is measured on its own and printed in microseconds.

Throttling is off. The sink (aiosmtpd) runs in its own process. Prints messages/second of the
campaign's send phase and of the bare loop, and their ratio (aim: at least 0.60).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import aiosmtplib
from common import seed_consenting_contacts, sink_process, timer

from mailer.config import parse_settings
from mailer.core.dkim import sign_message
from mailer.core.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.delivery.dkimkeys import generate_key_pair, load_signing_key
from mailer.delivery.sending import run_campaign
from mailer.demo import DEMO_CONFIG
from mailer.store.campaign import create_campaign
from mailer.store.db import create_schema, make_engine


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


def dkim_section(algorithm: str | None, folder: Path) -> dict[str, Any]:
    if algorithm is None:
        return {}
    key = generate_key_pair("bench", "bakkerij.example", algorithm, folder)  # type: ignore[arg-type]
    return {
        "dkim": {
            "selector": "bench",
            "domain": "bakkerij.example",
            "private_key_file": str(key.private_key_file),
            "algorithm": key.algorithm,
        }
    }


def campaign_rate(
    port: int, count: int, connections: int, folder: Path, dkim: dict[str, Any]
) -> tuple[float, float]:
    data = {
        **DEMO_CONFIG,
        "database": {"url": f"sqlite:///{folder / 'bench.db'}"},
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none",
                 "max_connections": connections},
        "throttle": {"messages_per_second": 0, "per_domain_per_minute": 0},
        **dkim,
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


def sample_message(dkim: dict[str, Any]) -> bytes:
    """One message as the campaign renders it, so both loops send the same size."""
    settings = parse_settings(
        {**DEMO_CONFIG, "database": {"url": "sqlite://"}, **dkim}, source="<bench>"
    )
    factory = MessageFactory(
        make_environment(settings),
        settings,
        CampaignContent("bench", "Benchmark", "newsletter", "newsletter"),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
        load_signing_key(settings),
    )
    recipient = Recipient(1, "person1@d1.example", "P1", None, "nl")
    return factory.render(recipient, basis="consent", now=datetime.now(UTC)).data


def sign_cost_us(dkim: dict[str, Any], rounds: int = 200) -> float:
    """Microseconds to DKIM-sign one rendered message (the key already loaded)."""
    settings = parse_settings(
        {**DEMO_CONFIG, "database": {"url": "sqlite://"}, **dkim}, source="<bench>"
    )
    key = load_signing_key(settings)
    assert key is not None
    message = sample_message({})
    start = timer()
    for _ in range(rounds):
        sign_message(message, key)
    return (timer() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    parser.add_argument("--dkim", choices=["rsa", "ed25519"], help="sign every message")
    args = parser.parse_args()
    bare, send, total = [], [], []
    with tempfile.TemporaryDirectory() as tmp, sink_process() as port:
        dkim = dkim_section(args.dkim, Path(tmp))
        message = sample_message(dkim)
        # Alternate the two loops so a noisy neighbour slows both alike; quote medians.
        for round_number in range(args.rounds):
            folder = Path(tmp) / f"round{round_number}"
            folder.mkdir()
            campaign_send, campaign_total = campaign_rate(
                port, args.recipients, args.connections, folder, dkim
            )
            send.append(campaign_send)
            total.append(campaign_total)
            bare.append(asyncio.run(bare_loop(port, args.recipients, args.connections, message)))
        sign_us = sign_cost_us(dkim) if dkim else None
    signing = f"DKIM {dkim['dkim']['algorithm']}" if dkim else "no DKIM"
    print(
        f"recipients: {args.recipients}, connections: {args.connections}, throttle: off, "
        f"{signing}, medians of {args.rounds} alternating rounds"
    )
    if sign_us is not None:
        print(f"DKIM signing alone:        {sign_us:8.0f} µs/message")
    print(f"bare aiosmtplib loop:      {median(bare):8.0f} messages/s   {_all(bare)}")
    print(f"campaign, send phase:      {median(send):8.0f} messages/s   {_all(send)}")
    print(f"campaign, plan + send:     {median(total):8.0f} messages/s   {_all(total)}")
    ratios = [s / b for s, b in zip(send, bare, strict=True)]
    print(f"ratio send phase / bare:   {median(ratios):8.2f}  (aim >= 0.60)   {_all(ratios, 2)}")


def _all(values: list[float], digits: int = 0) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


if __name__ == "__main__":
    main()
