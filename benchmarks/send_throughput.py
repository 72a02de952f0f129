"""`campaign send` against the bare aiosmtplib loop: unsigned, RSA-2048 and Ed25519, two sinks.

    ./dev bench                        or
    .venv/bin/python benchmarks/send_throughput.py [--recipients 5000] [--connections 8]
        [--rounds 3] [--sinks smtp-sink aiosmtpd] [--relay-recipients 800]

In one run, in alternating rounds (so a noisy neighbour slows every path alike), against
Postfix's `smtp-sink` (C; the Debian package `postfix` is installed when it is missing, and
`smtp-sink` listens on 127.0.0.1 only) and against aiosmtpd (Python, its own process):

- the bare aiosmtplib loop: pre-built bytes, one recipient per message;
- `campaign send` (in-process `run_campaign`, SQLite, throttle off): unsigned, DKIM RSA-2048,
  DKIM Ed25519 (a key made for the run; signed in the signing process,
  mailer.delivery.signing). The send phase is timed from the end of planning.

Then the same through a relay with latency: a TCP proxy on loopback (its own process) that
holds every chunk 10 ms in each direction, a 20 ms round trip, printing messages/s per
connection; beside it a bare pipelined client (RFC 2920: MAIL, RCPT and DATA in one write).
`campaign send` pipelines when the server offers it (mailer.delivery.pipelining, after
aiosmtplib's connect, TLS and EHLO); the bare aiosmtplib loop cannot.

Medians of the rounds are printed, with every round's figure; ratios are taken per round.
Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

import aiosmtplib
from common import (
    free_port,
    python_process,
    seed_consenting_contacts,
    sink_process,
    smtp_sink,
    timer,
)

from mailer.config import parse_settings
from mailer.core.dkim import sign_message
from mailer.core.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.delivery.dkimkeys import generate_key_pair, load_signing_key, load_signing_keys
from mailer.delivery.sending import run_campaign
from mailer.demo import DEMO_CONFIG
from mailer.store.campaign import create_campaign
from mailer.store.db import create_schema, make_engine

SENDER = "nieuws@bakkerij.example"


async def bare_loop(port: int, count: int, connections: int, message: bytes) -> float:
    """The floor: pre-built bytes, one recipient per message, `connections` clients."""
    remaining = iter(range(count))

    async def client() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for n in remaining:
            await smtp.sendmail(SENDER, [f"person{n}@d.example"], message)
        await smtp.quit()

    start = timer()
    await asyncio.gather(*(client() for _ in range(connections)))
    return count / (timer() - start)


async def pipelined_loop(port: int, count: int, connections: int, message: bytes) -> float:
    """What RFC 2920 pipelining gives: MAIL, RCPT and DATA in one write, then the body.

    A bare client on asyncio streams, for the figure only (the product keeps aiosmtplib):
    two round trips per message instead of four.
    """
    body = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    remaining = iter(range(count))

    async def reply(reader: asyncio.StreamReader) -> int:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return int(line[:3])

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reply(reader)
        writer.write(b"EHLO bench.example\r\n")
        await reply(reader)
        for n in remaining:
            writer.write(
                b"MAIL FROM:<" + SENDER.encode() + b">\r\nRCPT TO:<person%d@d.example>\r\n"
                b"DATA\r\n" % n
            )
            codes = [await reply(reader) for _ in range(3)]
            assert codes == [250, 250, 354], codes
            writer.write(body)
            assert await reply(reader) == 250
        writer.write(b"QUIT\r\n")
        await reply(reader)
        writer.close()

    start = timer()
    await asyncio.gather(*(client() for _ in range(connections)))
    return count / (timer() - start)


def dkim_section(algorithm: str | None, folder: Path) -> dict[str, Any]:
    if algorithm is None:
        return {}
    key = generate_key_pair(f"bench{algorithm}", "bakkerij.example", algorithm, folder)  # type: ignore[arg-type]
    return {
        "dkim": {
            "selector": f"bench{algorithm}",
            "domain": "bakkerij.example",
            "private_key_file": str(key.private_key_file),
            "algorithm": key.algorithm,
        }
    }


def campaign_rate(
    port: int, count: int, connections: int, folder: Path, dkim: dict[str, Any]
) -> tuple[float, float]:
    """(send phase, plan + send) messages/s of `run_campaign` on a fresh SQLite database."""
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
        load_signing_keys(settings),
    )
    recipient = Recipient(1, "person1@d1.example", "P1", None, "nl")
    return factory.render(recipient, basis="consent", now=datetime.now(UTC)).data


def sign_cost_us(dkim: dict[str, Any], rounds: int = 300) -> float:
    """Microseconds to DKIM-sign one rendered message (the key already loaded)."""
    settings = parse_settings(
        {**DEMO_CONFIG, "database": {"url": "sqlite://"}, **dkim}, source="<bench>"
    )
    key = load_signing_key(settings)
    assert key is not None
    message = sample_message({})
    start = timer()
    for _ in range(rounds):
        sign_message(message, key, timestamp=1_764_000_000)
    return (timer() - start) / rounds * 1e6


# -- the sinks ---------------------------------------------------------------------------------


RELAY_CODE = """
import asyncio, sys
DELAY = float(sys.argv[3])

async def pump(reader, writer):
    # Each chunk is written DELAY seconds after it arrived, in order: a fixed one-way latency.
    loop = asyncio.get_running_loop()
    held = asyncio.Queue()
    async def release():
        while (item := await held.get()) is not None:
            due, data = item
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()
        writer.close()
    releaser = asyncio.ensure_future(release())
    while data := await reader.read(65536):
        held.put_nowait((loop.time() + DELAY, data))
    held.put_nowait(None)
    await releaser

async def serve(client_reader, client_writer):
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    await asyncio.gather(pump(client_reader, upstream_writer), pump(upstream_reader, client_writer),
                         return_exceptions=True)

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()

asyncio.run(main())
"""


@contextmanager
def latency_relay(upstream: int, one_way_seconds: float = 0.010) -> Iterator[int]:
    """A TCP proxy on 127.0.0.1 that delays each direction by `one_way_seconds`."""
    port = free_port()
    with python_process(RELAY_CODE, str(port), str(upstream), str(one_way_seconds)):
        yield port


# -- the run -----------------------------------------------------------------------------------

PATHS = ("bare", "unsigned", "rsa", "ed25519")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    parser.add_argument("--sinks", nargs="+", default=["smtp-sink", "aiosmtpd"])
    parser.add_argument("--relay-recipients", type=int, default=800, help="0: no relay run")
    args = parser.parse_args()
    send: dict[tuple[str, str], list[float]] = {}
    relay: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        ports = {
            name: stack.enter_context(smtp_sink() if name == "smtp-sink" else sink_process())
            for name in args.sinks
        }
        dkim = {None: {}, **{a: dkim_section(a, folder) for a in ("rsa", "ed25519")}}
        unsigned = sample_message({})
        sign_us = {a: sign_cost_us(dkim[a]) for a in ("rsa", "ed25519")}
        for round_number in range(args.rounds):
            for sink, port in ports.items():
                for path in PATHS:
                    if path == "bare":
                        rate = asyncio.run(
                            bare_loop(port, args.recipients, args.connections, unsigned)
                        )
                    else:
                        run_folder = folder / f"r{round_number}-{sink}-{path}"
                        run_folder.mkdir()
                        algorithm = None if path == "unsigned" else path
                        rate, _total = campaign_rate(
                            port, args.recipients, args.connections, run_folder, dkim[algorithm]
                        )
                    send.setdefault((sink, path), []).append(rate)
                    print(f"  round {round_number + 1} {sink:9} {path:8} {rate:7.0f} msg/s",
                          file=sys.stderr, flush=True)  # fmt: skip
            if args.relay_recipients:
                first_sink = ports[args.sinks[0]]
                with latency_relay(first_sink) as relay_port:
                    n, c = args.relay_recipients, args.connections
                    relay.setdefault("bare", []).append(
                        asyncio.run(bare_loop(relay_port, n, c, unsigned))
                    )
                    relay.setdefault("pipelined", []).append(
                        asyncio.run(pipelined_loop(relay_port, n, c, unsigned))
                    )
                    run_folder = folder / f"r{round_number}-relay"
                    run_folder.mkdir()
                    relay.setdefault("campaign", []).append(
                        campaign_rate(relay_port, n, c, run_folder, {})[0]
                    )

    print(
        f"recipients: {args.recipients}, connections: {args.connections}, throttle: off, "
        f"SQLite, medians of {args.rounds} alternating rounds (every round in brackets)"
    )
    print(f"DKIM signing alone: RSA-2048 {sign_us['rsa']:.0f} µs, "
          f"Ed25519 {sign_us['ed25519']:.0f} µs per message")  # fmt: skip
    for sink in ports:
        print(f"\n{sink}:")
        bare = send[(sink, "bare")]
        for path in PATHS:
            rates = send[(sink, path)]
            line = f"  {path:10} {median(rates):7.0f} msg/s {_all(rates)}"
            if path != "bare":
                to_bare = [r / b for r, b in zip(rates, bare, strict=True)]
                line += f"  ratio to bare {median(to_bare):.2f} {_all(to_bare, 2)}"
            if path in ("rsa", "ed25519"):
                plain = send[(sink, "unsigned")]
                to_plain = [r / u for r, u in zip(rates, plain, strict=True)]
                line += f"  to unsigned {median(to_plain):.2f} {_all(to_plain, 2)}"
            print(line)
    if relay:
        c = args.connections
        print(f"\nthrough a 20 ms round-trip relay to {args.sinks[0]}, {c} connections, "
              f"{args.relay_recipients} recipients:")  # fmt: skip
        for name, rates in relay.items():
            print(f"  {name:10} {median(rates):7.1f} msg/s = {median(rates) / c:5.1f} per "
                  f"connection {_all(rates, 1)}")  # fmt: skip


def _all(values: list[float], digits: int = 0) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


if __name__ == "__main__":
    main()
