"""Load on the web side: many concurrent clients doing one-click unsubscribes and signups.

    ./dev bench                        or
    .venv/bin/python benchmarks/web_load.py [--unsubscribes 2000] [--signups 500] [--clients 50]

Bounded and loopback only: a real uvicorn (its own process) on 127.0.0.1, an aiosmtpd sink (its
own process) for the confirmation mails, a fixed number of requests and a time limit
(--max-seconds). Prints requests/second and latency percentiles, then checks that nothing was
lost: every answered unsubscribe has its suppression and withdrawal, every answered signup its
requested consent. Exits 1 if anything is missing or any request failed; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from common import free_port, seed_consenting_contacts, sink_process, timer
from sqlalchemy import func, select

from mailer.config import Settings, parse_settings
from mailer.core.tokens import TokenSigner, address_hash
from mailer.demo import DEMO_CONFIG
from mailer.store.db import create_schema, make_engine
from mailer.store.models import Consent, Suppression


def settings_for(db: Path, smtp_port: int, http_port: int) -> Settings:
    data: dict[str, Any] = {
        **DEMO_CONFIG,
        "database": {"url": f"sqlite:///{db}"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
        # Every client comes from 127.0.0.1 here, so the per-IP limit is off for the run.
        "web": {"base_url": f"http://127.0.0.1:{http_port}", "port": http_port,
                "signups_per_ip_per_hour": 0},
    }  # fmt: skip
    return parse_settings(data, source="<bench>")


def serve(db: str, smtp_port: int, http_port: int) -> None:
    """Child process: the app under uvicorn, as `mailer serve` runs it."""
    import uvicorn

    from double_optin.app import create_app

    settings = settings_for(Path(db), smtp_port, http_port)
    uvicorn.run(
        create_app(settings), host="127.0.0.1", port=http_port, log_level="warning",
        access_log=False,
    )  # fmt: skip


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"unsub": [], "signup": []})
    failures: list[str] = field(default_factory=list)
    unsubscribed: list[int] = field(default_factory=list)
    signed_up: list[str] = field(default_factory=list)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


_MULTIPART = (
    b'--b0undary\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
    b"One-Click\r\n--b0undary--\r\n"
)


def request_bytes(host: str, kind: str, payload: Any) -> bytes:
    """The exact request a client sends: what httpx would send, built once per job."""
    if kind == "unsub":
        contact_id, token = payload
        path = f"/unsubscribe/{token}"
        # RFC 8058: what a mailbox provider sends; both encodings, alternating.
        if contact_id % 2:
            body, kind_of = b"List-Unsubscribe=One-Click", b"application/x-www-form-urlencoded"
        else:
            body, kind_of = _MULTIPART, b"multipart/form-data; boundary=b0undary"
    else:
        path, kind_of = "/subscribe", b"application/x-www-form-urlencoded"
        body = urlencode({"email": payload, "lists": "newsletter"}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: web_load\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    return head + b"Content-Type: " + kind_of + b"\r\n\r\n" + body


async def load_raw(base: str, jobs: list[tuple[str, Any]], clients: int, deadline: float) -> Tally:
    """The load through plain keep-alive sockets: a few microseconds of client CPU a request,
    so that on a 2-core machine the figures are the server's, not the load generator's (httpx
    spends several milliseconds of CPU on each request; `--client httpx` measures with it)."""
    tally = Tally()
    host_port = base.removeprefix("http://")
    host, port = host_port.rsplit(":", 1)
    pending = iter(jobs)

    async def client() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        for kind, payload in pending:
            if time.monotonic() >= deadline:
                break
            start = timer()
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(request_bytes(host_port, kind, payload))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                lines = head.lower().split(b"\r\n")
                length = next(
                    int(v.split(b":")[1]) for v in lines if v.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                if b"connection: close" in lines:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
                tally.failures.append(f"{kind}: {exc!r}")
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            tally.latencies[kind].append(timer() - start)
            if status != 200:
                tally.failures.append(f"{kind}: HTTP {status}")
            elif kind == "unsub":
                tally.unsubscribed.append(payload[0])
            else:
                tally.signed_up.append(payload)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return tally


async def load(base: str, jobs: list[tuple[str, Any]], clients: int, deadline: float) -> Tally:
    tally = Tally()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient, n: int) -> None:
        while not queue.empty() and time.monotonic() < deadline:
            kind, payload = queue.get_nowait()
            start = timer()
            try:
                if kind == "unsub":
                    contact_id, token = payload
                    # RFC 8058: what a mailbox provider sends; both encodings, alternating.
                    if contact_id % 2:
                        answer = await http.post(
                            f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
                        )
                    else:
                        answer = await http.post(
                            f"/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")}
                        )
                else:
                    answer = await http.post(
                        "/subscribe", data={"email": payload, "lists": ["newsletter"]}
                    )
            except httpx.HTTPError as exc:
                tally.failures.append(f"{kind}: {exc!r}")
                continue
            tally.latencies[kind].append(timer() - start)
            if answer.status_code != 200:
                tally.failures.append(f"{kind}: HTTP {answer.status_code}")
            elif kind == "unsub":
                tally.unsubscribed.append(payload[0])
            else:
                tally.signed_up.append(payload)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(http, n) for n in range(clients)))
    return tally


def verify(settings: Settings, tally: Tally, emails: dict[int, str]) -> list[str]:
    """Every answered unsubscribe and signup is in the database."""
    engine = make_engine(settings.database.url)
    key = settings.secret_keys[-1]
    suppression, consent = Suppression.__table__, Consent.__table__  # type: ignore[attr-defined]
    problems = []
    with engine.connect() as conn:
        hashes = set(conn.execute(select(suppression.c.address_hash)).scalars())
        withdrawn = set(
            conn.execute(
                select(consent.c.contact_id).where(consent.c.event == "withdrawn")
            ).scalars()
        )
        requested = conn.execute(
            select(func.count()).select_from(consent).where(consent.c.event == "requested")
        ).scalar_one()
    engine.dispose()
    missing = [i for i in tally.unsubscribed if address_hash(emails[i], key) not in hashes]
    if missing:
        problems.append(f"{len(missing)} unsubscribes without a suppression")
    if not_withdrawn := [i for i in tally.unsubscribed if i not in withdrawn]:
        problems.append(f"{len(not_withdrawn)} unsubscribes without a withdrawal")
    if requested != len(tally.signed_up):
        problems.append(f"{len(tally.signed_up)} signups answered, {requested} recorded")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unsubscribes", type=int, default=2000)
    parser.add_argument("--signups", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument(
        "--client", choices=("raw", "httpx"), default="raw",
        help="raw: plain keep-alive sockets (default); httpx: the httpx client, which costs "
        "more CPU per request than the server does",
    )  # fmt: skip
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return 0

    with tempfile.TemporaryDirectory() as tmp, sink_process() as smtp_port:
        db, http_port = Path(tmp) / "web.db", free_port()
        settings = settings_for(db, smtp_port, http_port)
        engine = make_engine(settings.database.url)
        create_schema(engine)
        seed_consenting_contacts(engine, args.unsubscribes)
        engine.dispose()
        signer = TokenSigner(settings.secret_keys)
        emails = {i: f"person{i}@d{i % 50}.example" for i in range(1, args.unsubscribes + 1)}
        unsubscribes = [("unsub", (i, signer.unsubscribe_token(i, "newsletter"))) for i in emails]
        signups = [("signup", f"new{n}@x.example") for n in range(args.signups)]
        # Interleaved, so both kinds hit the database at the same time.
        step = max(1, len(unsubscribes) // max(1, len(signups)))
        jobs: list[tuple[str, Any]] = []
        for n, job in enumerate(unsubscribes):
            jobs.append(job)
            if n % step == step - 1 and signups:
                jobs.append(signups.pop())
        jobs.extend(signups)

        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(db), str(smtp_port), str(http_port)],
            env={**os.environ},
        )
        try:
            base = f"http://127.0.0.1:{http_port}"
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            start, cpu_before, own_before = timer(), cpu_seconds(server.pid), time.process_time()
            drive = load_raw if args.client == "raw" else load
            tally = asyncio.run(
                drive(base, jobs, args.clients, time.monotonic() + args.max_seconds)
            )
            elapsed, cpu_after = timer() - start, cpu_seconds(server.pid)
            own = time.process_time() - own_before
        finally:
            server.terminate()
            server.wait(timeout=10)
        problems = tally.failures[:5] + verify(settings, tally, emails)

    every = tally.latencies["unsub"] + tally.latencies["signup"]
    print(
        f"web load: {len(every)} requests ({len(tally.latencies['unsub'])} one-click "
        f"unsubscribes, {len(tally.latencies['signup'])} signups) from {args.clients} concurrent "
        f"clients ({args.client}) in {elapsed:.1f} s"
    )
    print(f"  throughput: {len(every) / elapsed:.0f} requests/second")
    if cpu_before is not None and cpu_after is not None and every:
        # Less noisy than the rate on a shared machine: what one request costs the server.
        print(f"  server CPU: {(cpu_after - cpu_before) / len(every) * 1000:.2f} ms per request "
              f"(the load's own client: {own / len(every) * 1000:.2f} ms)")  # fmt: skip
    for kind, values in (("all", every), *tally.latencies.items()):
        p50, p99, top = (percentile(values, 0.5), percentile(values, 0.99), max(values, default=0))
        print(f"  latency {kind:>6}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
              f"max {top * 1000:.0f} ms")  # fmt: skip
    if len(every) < len(jobs):
        print(f"  stopped at --max-seconds: {len(jobs) - len(every)} requests not sent")
    if problems:
        print("  LOST OR FAILED: " + "; ".join(problems) + f" ({len(tally.failures)} failures)")
        return 1
    print("  nothing lost: every unsubscribe has its suppression and withdrawal, every signup "
          "its requested consent")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
