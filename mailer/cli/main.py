"""The `mailer` command: parses, calls one engine function, prints. Exit codes in one place.

The shared app and helpers are in cli.base; the other command groups' modules register their
commands when imported here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer.cli import campaign, contacts, ops, output, overview, preview, privacy, schedule
from mailer.cli.base import (
    app,
    open_engine,
    settings_from_options,
)
from mailer.errors import InputError, MailerError
from mailer.store.db import create_schema

__all__ = ["app", "exit_code_for", "main"]
_COMMAND_MODULES = (
    campaign,
    contacts,
    ops,
    overview,
    preview,
    privacy,
    schedule,
)  # importing them registers their commands


@app.command()
def init() -> None:
    """Create or upgrade the database. Safe to run again."""
    settings = settings_from_options()
    with open_engine(settings, require_schema=False) as engine:
        created = create_schema(engine)
        where = engine.url.render_as_string(hide_password=True)
    if created:
        output.line(f"Database {where}: created or upgraded {', '.join(sorted(created))}.")
    else:
        output.line(f"Database {where} is up to date.")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the captured messages (.eml).")] = Path(
        "demo-out"
    ),
) -> None:
    """The whole flow on an embedded default: temporary database, local SMTP sink, one run."""
    from mailer.demo import run_demo

    with output.SendProgress() as progress:
        result = run_demo(out, os.environ, on_plan=progress.start, on_progress=progress.advance)
    output.plan_table(result.plan, title="Audience of demo-newsletter")
    output.report_table(result.report)
    output.line(f"{len(result.eml_files)} messages written to {out}/ as .eml files.")


def exit_code_for(error: BaseException) -> int:
    """The one place that maps the error tree to exit codes (DESIGN.md, "Exit codes")."""
    return 2 if isinstance(error, InputError) else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for number, arg in enumerate(args, start=1):
        # Python hands over bytes that are not UTF-8 as lone surrogates (PEP 383); printed or
        # stored they end in a UnicodeEncodeError traceback (issue 14, row 10).
        if any("\udc80" <= char <= "\udcff" for char in arg):
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            output.error(
                f"argument {number} ({shown}) is not valid UTF-8; give names and addresses "
                "in UTF-8 (rename a file whose name is not)."
            )
            return 2
    try:
        # Standalone mode: usage errors print themselves and exit 2, typer.Exit exits with its code.
        app(args=argv, prog_name="mailer")
    except MailerError as error:
        output.error(str(error))
        return exit_code_for(error)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
