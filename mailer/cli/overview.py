"""`mailer campaign list`, `mailer lists`, `mailer contacts show`: the state at a glance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import typer

from mailer.cli import output
from mailer.cli.base import app, campaign_app, contacts_app, open_engine, settings_from_options

__all__: list[str] = []  # commands register themselves on the app

JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
# The delivery statuses in the order a run moves them through, for `campaign list`.
_ORDER = ("sent", "queued", "claimed", "sending", "deferred", "failed", "unknown", "cancelled",
          "skipped", "suppressed")  # fmt: skip


@campaign_app.command("list")
def campaign_list(as_json: JsonOption = False) -> None:
    """Every campaign: list, category, status, deliveries by status, next scheduled run."""
    from mailer.scheduler import list_schedules
    from mailer.store.overview import campaign_rows

    settings = settings_from_options()
    with open_engine(settings) as engine:
        rows = campaign_rows(engine)
        next_runs = {e.campaign: e.next_run for e in list_schedules(engine, settings)}
    for row in rows:
        row.next_run = next_runs.get(row.name)
    if as_json:
        print(json.dumps({"campaigns": [row.as_dict() for row in rows]}, ensure_ascii=False,
                         indent=2))  # fmt: skip
        return
    if not rows:
        output.line("No campaigns yet: create one with `mailer campaign create`.")
        return
    output.grid(
        "Campaigns",
        ("name", "list", "category", "status", "deliveries", "next run"),
        (
            (row.name, row.list_name, row.category, row.status, _counts(row.by_status),
             f"{row.next_run:%Y-%m-%d %H:%M %Z}" if row.next_run else "")
            for row in rows
        ),
    )  # fmt: skip


def _counts(by_status: Mapping[str, int]) -> str:
    """ "sent 120, queued 3, ..." in the order a run moves through; "none" for no ledger yet."""
    order = {status: n for n, status in enumerate(_ORDER)}
    ranked = sorted(by_status.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return ", ".join(f"{status} {n}" for status, n in ranked) or "none"


@app.command("lists")
def lists(as_json: JsonOption = False) -> None:
    """Per configured list: confirmed subscribers, pending signups, withdrawn, suppressed."""
    from mailer.store.overview import list_rows

    settings = settings_from_options()
    with open_engine(settings) as engine:
        rows = list_rows(engine, settings)
    if as_json:
        print(json.dumps({"lists": [row.as_dict() for row in rows]}, ensure_ascii=False,
                         indent=2))  # fmt: skip
        return
    output.grid(
        "Lists",
        ("list", "title", "#confirmed", "#pending", "#withdrawn", "#suppressed"),
        ((r.name, r.title, r.confirmed, r.pending, r.withdrawn, r.suppressed) for r in rows),
    )


@contacts_app.command("show")
def contacts_show(
    email: Annotated[str, typer.Argument(help="The person's e-mail address.")],
    last: Annotated[int, typer.Option(min=1, help="How many of the last deliveries.")] = 10,
) -> None:
    """One person: fields, consent per list, purchases and objections, suppressions, and the
    last deliveries with their basis and status."""
    from mailer.core.policy import ConsentFact, consent_state
    from mailer.core.states import ConsentEvent, ConsentOrigin
    from mailer.privacy.person import export_person

    settings = settings_from_options()
    with open_engine(settings) as engine:
        person = export_person(engine, settings, email)
    output.line(person["email"])
    for key, value in person["contact"].items():
        if value not in (None, "") and key != "email":
            output.line(f"    {key + ':':<24}{value}")
    facts = [
        ConsentFact(c["list"], ConsentEvent(c["event"]), ConsentOrigin(c["origin"]),
                    datetime.fromisoformat(c["at"]))
        for c in person["consents"]
    ]  # fmt: skip
    output.line("")
    output.grid(
        "Consent per list",
        ("list", "state", "last event"),
        (
            (name, consent_state(facts, name), _last_event(person["consents"], name))
            for name in sorted({*settings.lists, *(f.list_name for f in facts)})
        ),
    )
    output.grid(
        "Purchases",
        ("category", "purchased at", "opt-out offered", "objected at"),
        ((p["category"], p["purchased_at"], "yes" if p["optout_offered"] else "no",
          p["objected_at"] or "") for p in person["purchases"]),
    )  # fmt: skip
    output.grid(
        "Suppressions",
        ("reason", "scope", "at"),
        ((s["reason"], s["scope"] or "all lists", s["at"]) for s in person["suppressions"]),
    )
    deliveries = person["deliveries"][-last:]
    output.grid(
        f"Last {len(deliveries)} of {len(person['deliveries'])} deliveries",
        ("campaign", "list", "basis / skip reason", "status", "sent at"),
        ((d["campaign"], d["list"], d["basis"] or d["skip_reason"] or "", d["status"],
          d["sent_at"] or "") for d in deliveries),
    )  # fmt: skip


def _last_event(consents: list[dict[str, Any]], list_name: str) -> str:
    mine = [c for c in consents if c["list"] == list_name]
    if not mine:
        return ""
    event = mine[-1]
    return f"{event['event']} {event['at']} ({event['origin']}, {event['source']})"
