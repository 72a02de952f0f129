"""Messages/second of 1, 2 and 4 `mailer worker` processes beside the bare aiosmtplib loop.

    .venv/bin/python benchmarks/workers_throughput.py [--recipients 20000] [--workers 1 2 4]
        [--connections 4] [--rounds 3] [--database postgresql|sqlite]
        [--sinks smtp-sink aiosmtpd]

For each sink and worker count: a fresh database (PostgreSQL on 127.0.0.1:5432 by default), N
consenting contacts, `mailer campaign queue`, then N `mailer worker --until-done` processes
with throttling off, each with --connections SMTP connections, against Postfix's `smtp-sink`
(C, offers PIPELINING: the workers pipeline, the bare loop cannot) and an aiosmtpd sink (Python,
no PIPELINING), each in its own process. Two rates per run: "wall" from starting the workers
to the last one exiting (process start-up included), and "steady" from the first to the last
`sent_at` in the ledger. The bare loop (pre-rendered bytes, as many connections as one worker)
runs in the same rounds, alternated with the worker runs so a noisy neighbour slows both alike;
medians are printed, and each ratio is to the bare loop on the same sink.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

from common import (
    postgres_database,
    seed_consenting_contacts,
    sink_process,
    smtp_sink,
    timer,
    write_config,
)
from send_throughput import bare_loop, sample_message
from sqlalchemy import func, select, text

from mailer.config import parse_settings
from mailer.demo import DEMO_CONFIG
from mailer.store.campaign import create_campaign
from mailer.store.db import create_schema, make_engine
from mailer.store.models import Delivery

MAILER = [sys.executable, "-m", "mailer"]


def project(folder: Path, url: str, port: int, connections: int, count: int) -> Path:
    """A settings file and a database with `count` consenting contacts and campaign "bench"."""
    config = write_config(
        folder,
        url,
        f"""
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
max_connections = {connections}
[throttle]
messages_per_second = 0
per_domain_per_minute = 0
[worker]
poll_seconds = 0.2
""",
    )
    settings = parse_settings({**DEMO_CONFIG, "database": {"url": url}}, source="<bench>")
    engine = make_engine(url)
    create_schema(engine)
    seed_consenting_contacts(engine, count)
    create_campaign(
        engine, settings, name="bench", list_name="newsletter", subject="Benchmark",
        template="newsletter", category=None, now=datetime.now(UTC),
    )  # fmt: skip
    engine.dispose()
    subprocess.run([*MAILER, "--config", str(config), "campaign", "queue", "bench"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return config


def workers_rate(config: Path, url: str, workers: int, count: int) -> tuple[float, float]:
    command = [*MAILER, "--config", str(config), "worker", "--until-done"]
    start = timer()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(workers)]
    codes = [p.wait() for p in processes]
    wall = timer() - start
    assert codes == [0] * workers, f"worker exit codes {codes}"
    engine = make_engine(url)
    with engine.connect() as conn:
        sent, first, last = conn.execute(
            select(func.count(), func.min(Delivery.sent_at), func.max(Delivery.sent_at)).where(
                Delivery.status == "sent"
            )
        ).one()
    engine.dispose()
    assert sent == count, f"sent {sent} of {count}"
    return count / wall, (count - 1) / (last - first).total_seconds()


def schema_url(database: str, schema: str) -> str:
    engine = make_engine(database)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{database}?options=-csearch_path%3D{schema}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections per worker")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--sinks", nargs="+", choices=["smtp-sink", "aiosmtpd"],
                        default=["smtp-sink", "aiosmtpd"])  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("MAILER_SECRET_KEY", "benchmark-secret-key-0123456789abcdef")
    bare: dict[str, list[float]] = {sink: [] for sink in args.sinks}
    wall = {(sink, n): list[float]() for sink in args.sinks for n in args.workers}
    steady = {(sink, n): list[float]() for sink in args.sinks for n in args.workers}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ports = {
            sink: stack.enter_context(smtp_sink() if sink == "smtp-sink" else sink_process())
            for sink in args.sinks
        }
        database = stack.enter_context(postgres_database()) if args.database == "postgresql" else ""
        message = sample_message({})
        for round_number in range(args.rounds):
            for sink, port in ports.items():
                rate = asyncio.run(bare_loop(port, args.recipients, args.connections, message))
                bare[sink].append(rate)
                for n in args.workers:
                    folder = tmp / f"r{round_number}w{n}{sink.replace('-', '')}"
                    folder.mkdir()
                    url = (
                        schema_url(database, folder.name)
                        if database
                        else f"sqlite:///{folder / 'bench.db'}"
                    )
                    config = project(folder, url, port, args.connections, args.recipients)
                    w, s = workers_rate(config, url, n, args.recipients)
                    wall[sink, n].append(w)
                    steady[sink, n].append(s)
                    print(f"round {round_number + 1}, {sink}: bare {rate:.0f}/s, {n} worker(s): "
                          f"wall {w:.0f}/s, steady {s:.0f}/s", file=sys.stderr)  # fmt: skip
    print(
        f"recipients: {args.recipients}, database: {args.database}, throttle: off, "
        f"{args.connections} SMTP connections per worker and for the bare loop, medians of "
        f"{args.rounds} rounds, {os.cpu_count()} CPUs"
    )
    for sink in args.sinks:
        print(f"{sink}: bare aiosmtplib loop: {median(bare[sink]):7.0f} messages/s "
              f"{_all(bare[sink])}")  # fmt: skip
        for n in args.workers:
            ratios = [s / b for s, b in zip(steady[sink, n], bare[sink], strict=True)]
            print(
                f"{sink}: {n} worker(s): wall {median(wall[sink, n]):7.0f} messages/s "
                f"{_all(wall[sink, n])}, steady {median(steady[sink, n]):7.0f} messages/s "
                f"{_all(steady[sink, n])}, ratio to bare {median(ratios):.2f} (per round "
                f"{', '.join(f'{r:.2f}' for r in ratios)})"
            )


def _all(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]"


if __name__ == "__main__":
    main()
