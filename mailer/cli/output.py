"""Terminal output for the command line: rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mailer.core.text import json_printable, printable
from mailer.store.campaign import CampaignReport
from mailer.store.planning import PlanSummary

__all__ = [
    "ImportProgress",
    "SendProgress",
    "csv_rows",
    "error",
    "fields",
    "grid",
    "json_document",
    "json_text",
    "line",
    "plan_table",
    "raw",
    "report_table",
    "rules_table",
    "trail_table",
    "warning",
]

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


def _terminal(text: str) -> str:
    """`text` with control characters escaped (ESC, C1, bidi overrides: issue 14, row 2), the
    line breaks of our own multi-line messages kept."""
    return "\n".join(printable(part, escape_backslash=False) for part in text.split("\n"))


def line(text: str) -> None:
    """One message line; never wrapped, so it can be grepped and copied whole."""
    _out.print(_terminal(text), markup=False, soft_wrap=True, highlight=False)


def fields(values: Sequence[str]) -> None:
    """One line of tab-separated fields (for cut and grep), each escaped like `line`; the tabs
    between them stay tabs."""
    _out.print("\t".join(_terminal(v) for v in values), markup=False, soft_wrap=True,
               highlight=False)  # fmt: skip


def raw(text: str) -> None:
    """Text to copy and paste (a DNS record, a settings snippet)."""
    line(text)


def json_text(document: str) -> None:
    """A JSON document (from json.dumps): the same value, with terminal-unsafe characters
    written as \\uXXXX escapes."""
    sys.stdout.write(json_printable(document) + "\n")


def warning(text: str) -> None:
    """Something to fix that does not stop the command (on stderr)."""
    _err.print(f"warning: {_terminal(text)}", markup=False, soft_wrap=True)


def error(text: str) -> None:
    _err.print(
        f"error: {_terminal(text)}",
        markup=False,
        soft_wrap=True,
        style="bold red" if _err.is_terminal else None,
    )


def _table(title: str, rows: Iterable[tuple[str, str, int]]) -> Table:
    table = Table(title=_cell_text(title), title_justify="left")
    table.add_column("decision")
    table.add_column("basis / reason")
    table.add_column("recipients", justify="right")
    for kind, label, count in rows:
        table.add_row(_cell_text(kind), _cell_text(label), str(count))
    return table


def _cell_text(value: str) -> Text:
    # A Text, not a str: rich would read "[...]" in a campaign name as markup.
    return Text(printable(value, escape_backslash=False))


def grid(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A table of plain values; columns whose name starts with "#" are numbers (right-aligned).

    Not on a terminal: the title, then tab-separated lines with a header, never wrapped, for
    grep and cut.
    """

    def cells(row: Sequence[object]) -> list[str]:
        # Escaped like every other printed value: a campaign name or reason is user input.
        return ["" if value is None else printable(str(value), escape_backslash=False)
                for value in row]  # fmt: skip

    if not _out.is_terminal:
        write = sys.stdout.write
        write(f"{printable(title)}\n" + "\t".join(c.lstrip("#") for c in columns) + "\n")
        for row in rows:
            write("\t".join(cells(row)) + "\n")
        return
    table = Table(title=_cell_text(title), title_justify="left")
    for column in columns:
        table.add_column(column.lstrip("#"), justify="right" if column[0] == "#" else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in cells(row)))
    _out.print(table)


def plan_table(plan: PlanSummary, *, title: str) -> None:
    from mailer.core.policy import Basis

    bases = {str(b) for b in Basis}
    rows = [
        ("send" if label in bases else "skip", label, count)
        for label, count in sorted(
            plan.by_label.items(), key=lambda kv: (kv[0] not in bases, kv[0])
        )
    ]
    rows.append(("total", f"{plan.allowed} to send", plan.total))
    _out.print(_table(title, rows))


def report_table(report: CampaignReport) -> None:
    rows = [("status", k, v) for k, v in sorted(report.by_status.items())]
    rows += [("basis", k, v) for k, v in sorted(report.by_basis.items())]
    rows += [("skipped", k, v) for k, v in sorted(report.by_skip_reason.items())]
    f, rates = report.feedback, report.rates
    if f.attempts:  # issue 16: what receivers said, as the guard counts it
        rows += [
            ("feedback", f"hard bounces ({rates['hard_bounce_rate']:.2%} of attempts)",
             f.hard_bounces),
            ("feedback", f"soft bounces ({rates['soft_bounce_rate']:.2%})", f.soft_bounces),
            ("feedback", f"complaints ({rates['complaint_rate']:.2%})", f.complaints),
            ("feedback", "attempts", f.attempts),
        ]  # fmt: skip
    rows.append(("total", "", report.total))
    table = _table(f"Report of {report.campaign} ({report.status})", rows)
    table.columns[0].header, table.columns[1].header = "counted by", "value"
    _out.print(table)
    if report.status_reason:
        line(f"{report.status.capitalize()}: {report.status_reason}")


def rules_table(title: str, rules: Iterable[tuple[str, float, str]]) -> None:
    """The rules a spam filter fired: name, points, description."""
    table = Table(title=title, title_justify="left")
    table.add_column("points", justify="right")
    table.add_column("rule")
    table.add_column("description")
    for name, points, description in rules:
        table.add_row(f"{points:.1f}", _cell_text(name), _cell_text(description))
    _out.print(table)


def json_document(head: Mapping[str, Any], key: str, items: Iterable[Mapping[str, Any]]) -> None:
    """Write `{**head, key: [items...]}` as JSON, streaming the items (no list in memory)."""
    write = sys.stdout.write
    body = json_printable(json.dumps(dict(head), ensure_ascii=False, indent=2))
    write(body[:-2] + f',\n  "{key}": [')
    for number, item in enumerate(items):
        item_text = json_printable(json.dumps(item, ensure_ascii=False))
        write(("," if number else "") + "\n    " + item_text)
    write("\n  ]\n}\n")


def csv_rows(columns: Sequence[str], items: Iterable[Mapping[str, Any]]) -> None:
    """CSV with a header row on stdout, one row per item as it comes (no list in memory)."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for item in items:
        writer.writerow([_cell(item.get(c)) for c in columns])


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    # A cell starting with "=" (or +, -, @) is run as a formula when the file is opened in a
    # spreadsheet (OWASP "CSV injection"); "-joe@x.nl" is a valid address. A leading quote keeps
    # it text.
    text = "" if value is None else str(value)
    text = "'" + text if text.startswith(_FORMULA_START) else text
    return printable(text, escape_backslash=False)


def trail_table(title: str, rows: Iterable[Sequence[str]]) -> None:
    """The consent trail: a heading line per event, then its evidence, every value whole.

    Not a grid: the wording and the user agent are long, and a grid at terminal width would
    fold them into unreadable slivers; this is evidence, copied whole into a complaint reply.
    """
    line(title)
    for at, list_name, event, origin, wording, source, ip, user_agent in rows:
        line("")
        line(printable(f"{at}  {list_name}  {event}  ({origin})"))
        for label, value in (("wording", f'"{wording}"' if wording else ""), ("source", source),
                             ("ip", ip), ("user agent", user_agent)):  # fmt: skip
            if value:
                # Each value escaped whole (a line break too): a stored value can never print
                # an event of its own into this proof (issue 14, row 2).
                line(f"    {label + ':':<12}{printable(value)}")


class ImportProgress:
    """A progress bar by bytes of the file on a terminal; nothing otherwise (the summary says)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ImportProgress:
        if _out.is_terminal:
            self._bar = Progress(
                TextColumn(self._label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(), console=_out, transient=True,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=None)
        return self

    def update(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


class SendProgress:
    """A rich progress bar on a terminal; plain lines at every tenth otherwise."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None
        self._total = 0
        self._done = 0
        self._next_line = 0

    def __enter__(self) -> SendProgress:
        if _out.is_terminal:
            self._bar = Progress(
                TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=_out,
            )  # fmt: skip
            self._bar.start()
        return self

    def start(self, plan: PlanSummary) -> None:
        self._total = plan.allowed
        line(f"Audience: {plan.allowed} to send, {plan.total - plan.allowed} skipped.")
        if self._bar is not None:
            self._task = self._bar.add_task("send", total=self._total)
        self._next_line = max(1, self._total // 10)

    def advance(self, _status: str) -> None:
        self._done += 1
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task)
        elif self._done >= self._next_line or self._done == self._total:
            line(f"sent or settled {self._done} of {self._total}")
            self._next_line = self._done + max(1, self._total // 10)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
