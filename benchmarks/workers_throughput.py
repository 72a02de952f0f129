"""Messages/second of 1, 2 and 4 `mailer worker` processes beside the bare aiosmtplib loop.

    .venv/bin/python benchmarks/workers_throughput.py [--recipients 20000] [--workers 1 2 4]
        [--connections 2] [--rounds 3] [--database postgresql|sqlite]

For each worker count: a fresh database (PostgreSQL on 127.0.0.1:5432 by default), N
consenting contacts, `mailer campaign queue`, then N `mailer worker --until-done` processes
with throttling off, each with --connections SMTP connections, against an aiosmtpd sink in
its own process. Two rates per run: "wall" from starting the workers to the last one exiting
(process start-up included), and "steady" from the first to the last `sent_at` in the ledger.
The bare loop (pre-rendered bytes, 4 connections) runs in the same rounds, alternated with the
worker runs so a noisy neighbour slows both alike; medians are printed.
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
    parser.add_argument("--connections", type=int, default=2, help="SMTP connections per worker")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    os.environ.setdefault("MAILER_SECRET_KEY", "benchmark-secret-key-0123456789abcdef")
    bare: list[float] = []
    wall: dict[int, list[float]] = {n: [] for n in args.workers}
    steady: dict[int, list[float]] = {n: [] for n in args.workers}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        port = stack.enter_context(sink_process())
        database = stack.enter_context(postgres_database()) if args.database == "postgresql" else ""
        message = sample_message({})
        for round_number in range(args.rounds):
            bare.append(asyncio.run(bare_loop(port, args.recipients, 4, message)))
            for n in args.workers:
                folder = tmp / f"r{round_number}w{n}"
                folder.mkdir()
                url = (
                    schema_url(database, folder.name)
                    if database
                    else f"sqlite:///{folder / 'bench.db'}"
                )
                config = project(folder, url, port, args.connections, args.recipients)
                w, s = workers_rate(config, url, n, args.recipients)
                wall[n].append(w)
                steady[n].append(s)
                print(f"round {round_number + 1}: {n} worker(s): wall {w:.0f}/s, steady {s:.0f}/s",
                      file=sys.stderr)  # fmt: skip
    print(
        f"recipients: {args.recipients}, database: {args.database}, throttle: off, "
        f"{args.connections} SMTP connections per worker, medians of {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"bare aiosmtplib loop (4 connections): {median(bare):7.0f} messages/s  {_all(bare)}")
    for n in args.workers:
        print(
            f"{n} worker(s): wall {median(wall[n]):7.0f} messages/s {_all(wall[n])}, steady "
            f"{median(steady[n]):7.0f} messages/s {_all(steady[n])}, "
            f"ratio to bare {median(steady[n]) / median(bare):.2f}"
        )


def _all(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]"


if __name__ == "__main__":
    main()
