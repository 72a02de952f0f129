"""`mailer demo`: the whole flow offline, on an embedded default, in seconds.

A temporary SQLite database, an in-process SMTP sink, a seeded population that shows every
basis and every skip reason, one newsletter run, the report, and the captured messages written
as .eml files. The messages are DKIM-signed (rsa-sha256) with a throwaway key made for the run,
so the .eml files show exactly what a configured `[dkim]` sends.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailer.config import Settings, parse_settings
from mailer.delivery.dkimkeys import generate_key_pair
from mailer.delivery.sending import RunSummary, run_campaign
from mailer.delivery.sink import SmtpSink
from mailer.store.campaign import CampaignReport, create_campaign, report
from mailer.store.db import create_schema, make_engine
from mailer.store.importer import import_contacts, import_customers
from mailer.store.models import SuppressionReason
from mailer.store.planning import PlanSummary
from mailer.store.suppression import add_suppression

__all__ = ["DEMO_CONFIG", "DemoResult", "run_demo"]

DEMO_CONFIG: dict[str, Any] = {
    "locale": "nl",
    "sender": {
        "organization": "Bakkerij Voorbeeld B.V.",
        "from_name": "Bakkerij Voorbeeld",
        "from_address": "nieuws@bakkerij.example",
        "reply_to": "info@bakkerij.example",
        "postal_address": "Dorpsstraat 1, 1234 AB Voorbeeld",
    },
    "smtp": {"host": "127.0.0.1", "security": "none", "max_connections": 2},
    "throttle": {"messages_per_second": 50, "per_domain_per_minute": 600},
    "web": {"base_url": "https://bakkerij.example"},
    "policy": {
        "jurisdiction": "NL",
        "offer_addresses": ["offertes@groothandel.example"],
    },
    "lists": {
        "newsletter": {
            "title": "Nieuwsbrief",
            "wording": "Ja, ik wil de maandelijkse nieuwsbrief van Bakkerij Voorbeeld per e-mail "
            "ontvangen.",
        },
        "offers": {"title": "Aanbiedingen", "wording": "Ja, stuur mij aanbiedingen per e-mail."},
    },
}

# Who is in the demo file, and what the policy should make of each of them.
CONTACTS_CSV = """\
email,first_name,last_name,locale,list,wording,source,requested_at,confirmed_at,ip
anna@voorbeeld.example,Anna,de Vries,nl,newsletter,,https://bakkerij.example/subscribe,2026-01-05T10:00:00,2026-01-05T10:04:00,192.0.2.10
joel@voorbeeld.example,Joël,Müller,nl,newsletter,,https://bakkerij.example/subscribe,2026-02-01T09:00:00,2026-02-01T09:30:00,192.0.2.11
emma@example.org,Emma,Smith,en,newsletter,,https://bakkerij.example/subscribe,2026-03-01T12:00:00,2026-03-01T12:01:00,198.51.100.7
bram@voorbeeld.example,Bram,Jansen,nl,newsletter,,https://bakkerij.example/subscribe,2026-04-01T08:00:00,,192.0.2.12
carla@voorbeeld.example,Carla,Bakker,nl,offers,,https://bakkerij.example/subscribe,2026-01-10T08:00:00,2026-01-10T08:05:00,192.0.2.13
henk@voorbeeld.example,Henk,Visser,nl,,,,,,
ingrid@voorbeeld.example,Ingrid,Smit,nl,newsletter,,https://bakkerij.example/subscribe,2026-01-02T08:00:00,2026-01-02T08:03:00,192.0.2.14
offertes@groothandel.example,,,nl,,,,,,
"""

CUSTOMERS_CSV = """\
email,category,purchased_at,optout_offered,objected_at,first_name,last_name
dirk@voorbeeld.example,brood,2026-05-01T15:00:00,true,,Dirk,Mulder
eva@voorbeeld.example,taart,2026-05-02T15:00:00,true,,Eva,de Boer
frank@voorbeeld.example,brood,2026-05-03T15:00:00,false,,Frank,Meijer
gerda@voorbeeld.example,brood,2026-05-04T15:00:00,true,2026-06-01T10:00:00,Gerda,de Groot
"""

EXPECTED = {
    "anna@voorbeeld.example": "consent",
    "joel@voorbeeld.example": "consent",
    "emma@example.org": "consent",
    "dirk@voorbeeld.example": "existing_customer",
    "offertes@groothandel.example": "role_address",
    "ingrid@voorbeeld.example": "suppressed",
    "bram@voorbeeld.example": "pending_confirmation",
    "carla@voorbeeld.example": "other_list",
    "eva@voorbeeld.example": "other_category",
    "frank@voorbeeld.example": "optout_not_offered",
    "gerda@voorbeeld.example": "objected",
    "henk@voorbeeld.example": "no_basis",
}


@dataclass
class DemoResult:
    plan: PlanSummary
    run: RunSummary
    report: CampaignReport
    eml_files: list[Path]


def demo_settings(
    database_url: str,
    smtp_port: int,
    environ: Mapping[str, str],
    dkim: Mapping[str, str] | None = None,
) -> Settings:
    data = {**DEMO_CONFIG, "database": {"url": database_url}}
    if dkim is not None:
        data["dkim"] = dict(dkim)
    data["smtp"] = {**DEMO_CONFIG["smtp"], "port": smtp_port}
    env = dict(environ)
    env.setdefault("MAILER_SECRET_KEY", secrets.token_urlsafe(32))
    return parse_settings(data, source="<embedded demo config>", environ=env)


def run_demo(
    out_dir: Path,
    environ: Mapping[str, str],
    *,
    on_plan: Callable[[PlanSummary], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> DemoResult:
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="mailer-demo-") as tmp, SmtpSink() as sink:
        folder = Path(tmp)
        key = generate_key_pair("demo", "bakkerij.example", "rsa", folder)
        dkim = {
            "selector": "demo",
            "domain": "bakkerij.example",
            "private_key_file": str(key.private_key_file),
            "algorithm": key.algorithm,
        }
        settings = demo_settings(f"sqlite:///{folder / 'demo.db'}", sink.port, environ, dkim)
        engine = make_engine(settings.database.url)
        try:
            create_schema(engine)
            contacts, customers = folder / "contacts.csv", folder / "customers.csv"
            contacts.write_text(CONTACTS_CSV, encoding="utf-8")
            customers.write_text(CUSTOMERS_CSV, encoding="utf-8")
            import_contacts(engine, settings, contacts, now=now)
            import_customers(engine, settings, customers, now=now)
            with engine.begin() as conn:  # Ingrid clicked "unsubscribe" last month
                add_suppression(
                    conn,
                    settings.require_hash_keys(),
                    "ingrid@voorbeeld.example",
                    SuppressionReason.UNSUBSCRIBED,
                    now - timedelta(days=30),
                )
            campaign = create_campaign(
                engine,
                settings,
                name="demo-newsletter",
                list_name="newsletter",
                subject="Nieuws van de bakker – kerststollen",
                template="newsletter",
                category="brood",
                now=now,
            )
            summary = asyncio.run(
                run_campaign(engine, settings, campaign, on_plan=on_plan, on_progress=on_progress)
            )
            final = report(engine, campaign)
        finally:
            engine.dispose()
        return DemoResult(summary.plan, summary, final, _write_eml(out_dir, sink))


def _write_eml(out_dir: Path, sink: SmtpSink) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.eml"):
        old.unlink()
    written = []
    for number, message in enumerate(sink.messages, start=1):
        local = message.recipients[0].split("@")[0].encode("ascii", "replace").decode()
        path = out_dir / f"{number:03d}-{local.replace('?', '_')}.eml"
        path.write_bytes(message.data)
        written.append(path)
    return written
