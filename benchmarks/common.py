"""Shared benchmark helpers: the sink SMTP servers (aiosmtpd, Postfix's smtp-sink) in their own
processes, and bulk seeding."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SINK_CODE = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Count:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Count.n += 1
        return "250 OK"
c = Controller(Count(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def python_process(code: str, *args: str) -> Iterator[None]:
    """`code` run in its own Python process until the block ends; it prints "ready" once
    it listens, and stops when its standard input closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


@contextmanager
def sink_process() -> Iterator[int]:
    """An aiosmtpd sink in a separate process (so it does not share our CPU time slice)."""
    port = free_port()
    with python_process(SINK_CODE, str(port)):
        yield port


def _smtp_sink_binary() -> str:
    found = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.path.exists(
        "/usr/sbin/smtp-sink") else None)  # fmt: skip
    if found:
        return found
    # Debian ships smtp-sink in postfix; the postfix daemon itself is not started for this.
    print("installing the Debian package postfix for smtp-sink ...", file=sys.stderr)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "postfix"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return "/usr/sbin/smtp-sink"


@contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's smtp-sink on 127.0.0.1 (it offers PIPELINING), until the block ends."""
    port = free_port()
    command = [_smtp_sink_binary(), "-m", "512"]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # smtp-sink refuses to keep super-user privileges
    proc = subprocess.Popen([*command, f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timer() -> float:
    return time.perf_counter()


os.environ.setdefault("MAILER_SECRET_KEY", "benchmark-secret-key-0123456789abcdef")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The tests' bulk seeder, one copy for both.
from tests.factories import seed_consenting_contacts  # noqa: E402, F401

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 for one benchmark run, dropped after."""
    import uuid

    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"mailer_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


CONFIG = """
[sender]
organization = "Bakkerij Voorbeeld B.V."
from_name = "Bakkerij Voorbeeld"
from_address = "nieuws@bakkerij.example"
postal_address = "Dorpsstraat 1, 1234 AB Voorbeeld"
[database]
url = "{url}"
[lists.newsletter]
title = "Nieuwsbrief"
wording = "Ja, ik wil de nieuwsbrief."
"""


def write_config(folder: Path, url: str, extra: str = "") -> Path:
    """A settings file for the `mailer` command: a sender, a list, the database, `extra`."""
    config = folder / "mailer.toml"
    config.write_text(CONFIG.format(url=url) + extra, encoding="utf-8")
    return config
