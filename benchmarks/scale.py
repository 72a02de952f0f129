"""A list of N contacts: import time, plan time and peak memory, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/scale.py [--contacts 1000000] [--database sqlite postgresql]
                                         [--steps plan queue]

For each database: writes a contacts CSV of N rows with consent evidence, runs
`mailer contacts import` on it in a fresh process, then `campaign plan` (who would be mailed,
nothing written) and `campaign queue` (the plan written as N ledger rows, as a send starts) in
others, and prints each one's wall time and the peak resident memory of its process. The aim
for 1M contacts (issue 12): `campaign queue` under 40 s on SQLite and 60 s on PostgreSQL, in
under 100 MB. SQLite is a file in a temporary folder; PostgreSQL a fresh database on
127.0.0.1:5432, dropped after. `--steps queue` skips `campaign plan` (the import always runs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from common import postgres_database, timer, write_config

MAILER = [sys.executable, "-m", "mailer"]


def write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,first_name,list,requested_at,confirmed_at,source\n")
        for n in range(count):
            out.write(
                f"person{n}@d{n % 50}.example,P{n},newsletter,"
                "2026-01-01T10:00:00,2026-01-01T10:05:00,signup form\n"
            )


def measured(config: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `mailer` command in a fresh process."""
    script = (
        "import resource, runpy, sys; sys.argv = ['mailer', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('mailer', run_name='__main__')\n"
        "finally:\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
    )
    start = timer()
    done = subprocess.run(
        [sys.executable, "-c", script, "--config", str(config), *args],
        capture_output=True, text=True,
    )  # fmt: skip
    elapsed = timer() - start
    if done.returncode != 0:
        raise SystemExit(f"mailer {' '.join(args)} failed:\n{done.stderr}")
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return elapsed, peak_kib / 1024


def run_on(url: str, folder: Path, csv: Path, steps: list[str]) -> dict[str, tuple[float, float]]:
    config = write_config(folder, url)
    subprocess.run([*MAILER, "--config", str(config), "init"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    results = {"import": measured(config, "contacts", "import", str(csv))}
    subprocess.run(
        [*MAILER, "--config", str(config), "campaign", "create", "big", "--list", "newsletter",
         "--subject", "Big", "--template", "newsletter"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if "plan" in steps:
        results["plan"] = measured(config, "campaign", "plan", "big")
    if "queue" in steps:
        results["queue"] = measured(config, "campaign", "queue", "big")  # plan + ledger rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument(
        "--database", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--steps", nargs="+", choices=["plan", "queue"], default=["plan", "queue"])
    args = parser.parse_args()
    os.environ.setdefault("MAILER_SECRET_KEY", "benchmark-secret-key-0123456789abcdef")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        csv = tmp / "contacts.csv"
        write_csv(csv, args.contacts)
        print(f"contacts: {args.contacts:,} ({csv.stat().st_size / 1e6:.0f} MB of CSV), "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        for database in args.database:
            folder = tmp / database
            folder.mkdir()
            if database == "sqlite":
                url = f"sqlite:///{folder / 'big.db'}"
            else:
                url = stack.enter_context(postgres_database())
            for step, (seconds, peak_mb) in run_on(url, folder, csv, args.steps).items():
                rate = args.contacts / seconds
                print(f"{database:10} {step:6}: {seconds:7.1f} s, {rate:8.0f} contacts/s, "
                      f"peak memory {peak_mb:4.0f} MB")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
