"""Erasure and the retention purge on a large file: how long they take (SQLite).

    .venv/bin/python benchmarks/privacy_ops.py [--contacts 100000] [--ended 0.1]

Seeds N contacts with a confirmed subscription and a ledger row each in an old campaign; a
fraction of them have a relationship that ended two years ago and withdrew their subscription
(so retention applies). Then times one `privacy erase`, `privacy purge --dry-run` and `purge`.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import seed_consenting_contacts, timer
from sqlalchemy import text

from mailer.config import parse_settings
from mailer.demo import DEMO_CONFIG
from mailer.privacy.person import erase_person, purge
from mailer.store.db import create_schema, make_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--ended", type=float, default=0.1, help="fraction to be purged")
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.db"
        settings = parse_settings(
            {**DEMO_CONFIG, "database": {"url": f"sqlite:///{db}"}}, source="<bench>"
        )
        engine = make_engine(settings.database.url)
        create_schema(engine)
        seed_consenting_contacts(engine, args.contacts)
        every = max(1, round(1 / args.ended)) if args.ended else args.contacts + 1
        long_ago = now - timedelta(days=800)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO campaign (id, name, list_name, subject, template, status, "
                    "created_at) VALUES (1, 'old', 'newsletter', 'Oud', 'newsletter', 'done', :t)"
                ),
                {"t": long_ago.replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "INSERT INTO delivery (campaign_id, contact_id, basis, status, attempts, "
                    "message_id, sent_at) SELECT 1, id, 'consent', 'sent', 1, "
                    "'<m' || id || '@bench>', :t FROM contact"
                ),
                {"t": long_ago.replace(tzinfo=None)},
            )
            conn.execute(
                text(
                    "UPDATE contact SET relationship_ended_at = :t WHERE id % :n = 0",
                ),
                {"t": long_ago.replace(tzinfo=None), "n": every},
            )
            conn.execute(
                text(
                    "INSERT INTO consent (contact_id, list_name, event, origin, wording, source, "
                    "at) SELECT id, 'newsletter', 'withdrawn', 'web', '', 'bench', :t "
                    "FROM contact WHERE id % :n = 0"
                ),
                # After the seeded confirmation: the subscription is no longer in force.
                {"t": now.replace(tzinfo=None), "n": every},
            )
        size = db.stat().st_size / 1e6
        print(f"contacts: {args.contacts}, ledger rows: {args.contacts}, file: {size:.0f} MB")

        start = timer()
        erase_person(engine, settings, "person1@d1.example", now=now)
        print(f"privacy erase (one person, incl. WAL checkpoint): {timer() - start:.3f} s")

        start = timer()
        dry = purge(engine, settings, now=now, dry_run=True)
        print(f"privacy purge --dry-run: {timer() - start:.2f} s ({dry.ended_count} to erase)")

        start = timer()
        done = purge(engine, settings, now=now, dry_run=False)
        elapsed = timer() - start
        print(
            f"privacy purge: {elapsed:.2f} s: {done.ended_count} erased "
            f"({done.ended_count / elapsed:.0f}/s), {done.deliveries} ledger rows stripped"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
