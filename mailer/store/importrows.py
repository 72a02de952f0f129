"""One CSV row of a contacts or customers import, checked and turned into what will be written.

A parser returns the parsed row, or a `Skip` with the reason a row is left out on purpose (a
cancelled order is no sale; an unsubscribed Laposta member is no signup). Everything else that
is wrong raises `InputError` naming file, line and column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.config import Settings
from mailer.store.csvfile import CsvRow
from mailer.store.models import CONTACT_PERSONAL_FIELDS, ConsentEvent

__all__ = [
    "CONSENT_COLUMNS",
    "CONTACT_COLUMNS",
    "CONTACT_FIELDS",
    "CUSTOMER_COLUMNS",
    "CUSTOMER_REQUIRED",
    "WORDING_NOT_RECORDED",
    "EventIn",
    "Parsed",
    "PurchaseIn",
    "RowParser",
    "Skip",
    "contact_parser",
    "customer_parser",
]

CONSENT_COLUMNS: tuple[str, ...] = (
    "list", "wording", "source", "requested_at", "confirmed_at", "ip", "requested_ip",
    "confirmed_ip",
)  # fmt: skip
# When the business relationship ended (a contract, an account closed): the retention purge
# erases the contact policy.retention_days later. Not personal data of its own, but a Contact
# field the file may set (empty keeps what is stored).
_ENDED = "relationship_ended_at"
CONTACT_FIELDS: tuple[str, ...] = (*CONTACT_PERSONAL_FIELDS, _ENDED)
CONTACT_COLUMNS: tuple[str, ...] = ("email", *CONTACT_FIELDS, *CONSENT_COLUMNS)
CUSTOMER_COLUMNS: tuple[str, ...] = (
    "email", "category", "purchased_at", "optout_offered", "objected_at", *CONTACT_FIELDS,
)  # fmt: skip
CUSTOMER_REQUIRED = ("email", "category", "purchased_at", "optout_offered")

# Rule 7 asks for the exact wording shown. A source that did not keep it (Mailchimp, Laposta, an
# old spreadsheet) must not be given today's configured text as if the person had read that.
WORDING_NOT_RECORDED = "wording not recorded by the source"

# WooCommerce order statuses that are no sale (yet): not paid (pending, on-hold: awaiting
# payment), failed, undone. An address from such an order was not obtained in a sale.
_NOT_A_SALE = frozenset(
    {"pending", "on-hold", "failed", "cancelled", "refunded", "checkout-draft", "trash"}
)


@dataclass(frozen=True, slots=True)
class EventIn:
    list_name: str
    event: ConsentEvent
    at: datetime | None  # None: the file gave no time; recorded at `now`, once
    wording: str
    source: str
    ip: str | None


@dataclass(frozen=True, slots=True)
class PurchaseIn:
    category: str
    at: datetime
    optout_offered: bool
    objected_at: datetime | None


@dataclass(frozen=True, slots=True)
class Parsed:
    email: str
    personal: dict[str, Any]
    events: tuple[EventIn, ...] = ()
    purchases: tuple[PurchaseIn, ...] = ()


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


RowParser = Callable[[CsvRow], Parsed | Skip]


def _personal(row: CsvRow) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in CONTACT_PERSONAL_FIELDS:
        value = row.day(name) if name == "birth_date" else row.text(name)
        if value is not None:
            fields[name] = value
    ended = row.when(_ENDED)
    if ended is not None:
        fields[_ENDED] = ended
    return fields


def _not_future(row: CsvRow, column: str, moment: datetime | None, now: datetime) -> None:
    if moment is not None and moment > now:
        raise row.error(
            column,
            f'"{row.values[column]}" is in the future; consent cannot have been given later '
            f"than now ({now:%Y-%m-%d %H:%M} UTC).",
        )


def contact_parser(settings: Settings, default_source: str, now: datetime) -> RowParser:
    def parse(row: CsvRow) -> Parsed | Skip:
        state = row.get("state")  # Laposta: active, unsubscribed, cleaned, deleted
        if state is not None and state.lower() != "active":
            return Skip(f"member state {state.lower()} (not a signup)")
        email, personal = row.address(), _personal(row)
        raw_list = row.get("list")
        if raw_list is None:
            # Evidence without a list cannot be stored; dropping it silently would lose consent.
            for column in CONSENT_COLUMNS[1:]:
                if column in row.values:
                    raise row.error("list", f"is empty, but {column} is given; name the list.")
            return Parsed(email, personal)
        list_name = raw_list.lower()
        if list_name not in settings.lists:
            configured = ", ".join(settings.lists)
            raise row.error("list", f'"{raw_list}" is not a configured list; lists: {configured}.')
        requested, confirmed = row.when("requested_at"), row.when("confirmed_at")
        _not_future(row, "requested_at", requested, now)
        _not_future(row, "confirmed_at", confirmed, now)
        if requested is not None and confirmed is not None and confirmed < requested:
            raise row.error(
                "confirmed_at",
                f'"{row.values["confirmed_at"]}" is before requested_at '
                f'"{row.values["requested_at"]}"; a confirmation cannot precede its request.',
            )
        wording = row.text("wording", multiline=True) or WORDING_NOT_RECORDED
        source = row.text("source") or default_source
        # One `ip` column (the old format) is both events' IP; the two columns keep them apart.
        shared_ip = row.ip("ip")
        requested_ip = row.ip("requested_ip") or shared_ip
        # Rule 1: a row without confirmed_at is a pending signup, never consent.
        events = [EventIn(list_name, ConsentEvent.REQUESTED, requested or confirmed, wording,
                          source, requested_ip)]  # fmt: skip
        if confirmed is not None:
            confirmed_ip = row.ip("confirmed_ip") or shared_ip
            events.append(
                EventIn(list_name, ConsentEvent.CONFIRMED, confirmed, wording, source,
                        confirmed_ip)
            )  # fmt: skip
        return Parsed(email, personal, events=tuple(events))

    return parse


def customer_parser(*, category_list: bool, optout_offered: bool | None) -> RowParser:
    cancelled_orders: set[str] = set()

    def parse(row: CsvRow) -> Parsed | Skip:
        status = (row.get("order_status") or "").lower().removeprefix("wc-")
        if status in _NOT_A_SALE:
            return Skip(f"order status {status} (not a sale)")
        # Shopify gives order-level values on the first line item of an order only.
        order = row.get("order_name")
        if row.get("cancelled_at") is not None and order is not None:
            cancelled_orders.add(order)
        if row.get("cancelled_at") is not None or order in cancelled_orders:
            return Skip("order cancelled (not a sale)")
        email, personal = row.address(), _personal(row)
        raw = row.text("category", required=True) or ""
        categories = [c.strip() for c in raw.split(",")] if category_list else [raw]
        at = row.when("purchased_at", required=True) or datetime.min
        offered = row.boolean("optout_offered") if optout_offered is None else optout_offered
        objected = row.when("objected_at")
        purchases = tuple(
            PurchaseIn(category=c, at=at, optout_offered=offered, objected_at=objected)
            for c in dict.fromkeys(categories)
            if c
        )
        return Parsed(email, personal, purchases=purchases)

    return parse
