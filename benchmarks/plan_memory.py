"""Planning a large list streams: time and peak memory of `campaign plan` on N contacts.

    .venv/bin/python benchmarks/plan_memory.py [--contacts 1000000]

Seeds N contacts with a confirmed subscription (SQLite), then plans a campaign in a fresh
process and prints the plan time and that process's peak resident memory (aim: < 300 MB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from common import peak_rss_mb, seed_consenting_contacts, timer

from mailer.campaign import create_campaign, get_campaign
from mailer.config import parse_settings
from mailer.db import create_schema, make_engine
from mailer.demo import DEMO_CONFIG
from mailer.planning import plan_counts


def settings_for(db: Path):  # type: ignore[no-untyped-def]
    return parse_settings({**DEMO_CONFIG, "database": {"url": f"sqlite:///{db}"}}, source="<b>")


def plan_in_this_process(db: Path) -> None:
    settings = settings_for(db)
    engine = make_engine(settings.database.url)
    start = timer()
    summary = plan_counts(engine, settings, get_campaign(engine, "big"), datetime.now(UTC))
    elapsed = timer() - start
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_rss_mb(), "total": summary.total}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--plan-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plan_only:
        plan_in_this_process(args.plan_only)
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.db"
        settings = settings_for(db)
        engine = make_engine(settings.database.url)
        create_schema(engine)
        start = timer()
        seed_consenting_contacts(engine, args.contacts)
        seeded = timer() - start
        create_campaign(
            engine, settings, name="big", list_name="newsletter", subject="Big",
            template="newsletter", category=None, now=datetime.now(UTC),
        )  # fmt: skip
        engine.dispose()
        out = subprocess.run(
            [sys.executable, __file__, "--plan-only", str(db)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    result = json.loads(out)
    print(f"contacts: {args.contacts} (seeded in {seeded:.1f} s, bulk insert)")
    print(f"plan: {result['seconds']:.1f} s, {args.contacts / result['seconds']:.0f} contacts/s")
    print(f"peak memory of the planning process: {result['peak_mb']:.0f} MB (aim < 300 MB)")
    assert result["total"] == args.contacts


if __name__ == "__main__":
    main()
