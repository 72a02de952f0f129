"""Import formats: which column of a vendor's export is which of our fields, and the header check.

A format maps the source file's column names (compared case-insensitively, as vendors and Excel
change the case) to our field names. Columns a vendor format knows but does not need are
ignored and listed once; any other column is refused, all of them named in one message, because
data minimisation (AVG art. 5(1)(c)) means nothing is stored that was not asked for. `--map
"Source=field,Other="` maps a column to a field, or drops it (empty field).

The column lists follow the vendors' documented exports:

- Mailchimp audience export (a zip with subscribed, unsubscribed and cleaned CSV files): merge
  fields by their labels ("Email Address", "First Name", ...), then MEMBER_RATING, OPTIN_TIME,
  OPTIN_IP, CONFIRM_TIME, CONFIRM_IP, LATITUDE, LONGITUDE, GMTOFF, DSTOFF, TIMEZONE, CC, REGION,
  LAST_CHANGED, LEID, EUID, NOTES, TAGS; the unsubscribed file adds UNSUB_TIME,
  UNSUB_CAMPAIGN_TITLE, UNSUB_CAMPAIGN_ID, UNSUB_REASON, UNSUB_REASON_OTHER; the cleaned file
  CLEAN_TIME, CLEAN_CAMPAIGN_TITLE, CLEAN_CAMPAIGN_ID. Times are "YYYY-MM-DD HH:MM:SS" in UTC.
- Laposta: the member fields of its API documentation (member_id, list_id, email, state,
  signup_date, confirm_date, modified, ip, source_url) and the custom fields voornaam and
  achternaam that most lists have; a member whose state is not "active" is left out.
- WooCommerce Customer/Order/Coupon Export, "one row per line item": order_date (shop time),
  status, billing_email, billing_first_name, ..., item_name, item_sku, ...; the product category
  column is item_category (add it to the export, or --map another column to category).
- Shopify's orders export: Name, Email, Financial Status, ..., Created at ("2025-10-07 09:50:26
  +0200"), Lineitem name, ..., Cancelled at, ...; one row per line item. It has no product
  category column: Lineitem name stands in for it unless --map names another column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mailer.errors import InputError

__all__ = [
    "CONTACT_FORMATS",
    "CUSTOMER_FORMATS",
    "SUPPRESSION_FORMATS",
    "Header",
    "ImportFormat",
    "ImportSource",
    "detect_delimiter",
    "parse_delimiter",
    "parse_map",
    "pick_format",
    "resolve_header",
]

MAILCHIMP_COMMON_IGNORED = (
    "Address", "Birthday", "MEMBER_RATING", "LATITUDE", "LONGITUDE", "GMTOFF", "DSTOFF",
    "TIMEZONE", "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS",
)  # fmt: skip
MAILCHIMP_STATUS_COLUMNS = (
    "UNSUB_TIME", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON",
    "UNSUB_REASON_OTHER", "CLEAN_TIME", "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ImportFormat:
    """How one vendor's export reads: source column -> our field, and what to leave out."""

    name: str  # as given to --format
    title: str  # for messages: "a Mailchimp audience export"
    columns: Mapping[str, str] = field(default_factory=dict)  # source column -> field
    ignored: tuple[str, ...] = ()  # known source columns not needed here
    # Naive times in the file are in the shop's local time (scheduler.timezone), not UTC.
    local_times: bool = False
    # One cell may name several categories, "Brood, Gebak > Taarten" (WooCommerce's notation).
    category_list: bool = False

    @property
    def generic(self) -> bool:
        return not self.columns


GENERIC = ImportFormat("generic", "a file in the mailer's own format")

MAILCHIMP_CONTACTS = ImportFormat(
    "mailchimp",
    "a Mailchimp audience export",
    columns={
        "Email Address": "email",
        "First Name": "first_name",
        "Last Name": "last_name",
        "Phone Number": "phone",
        "OPTIN_TIME": "requested_at",
        "OPTIN_IP": "requested_ip",
        "CONFIRM_TIME": "confirmed_at",
        "CONFIRM_IP": "confirmed_ip",
    },  # fmt: skip
    # Address is one cell of street, city, zip and country separated by double spaces, and
    # Birthday is "MM/DD" without a year: neither fits our fields, and mail needs neither.
    ignored=(*MAILCHIMP_COMMON_IGNORED, *MAILCHIMP_STATUS_COLUMNS),
)
LAPOSTA_CONTACTS = ImportFormat(
    "laposta",
    "a Laposta export",
    columns={
        "email": "email",
        "signup_date": "requested_at",
        "confirm_date": "confirmed_at",
        # Laposta keeps the IP address of the signup only.
        "ip": "requested_ip",
        "source_url": "source",
        "state": "state",
        # The custom fields most Laposta lists have, by their usual names.
        "voornaam": "first_name",
        "achternaam": "last_name",
    },  # fmt: skip
    ignored=("member_id", "list_id", "modified", "custom_fields"),
)
MAILCHIMP_SUPPRESSIONS = ImportFormat(
    "mailchimp",
    "a Mailchimp unsubscribed or cleaned export",
    columns={
        "Email Address": "email",
        "UNSUB_TIME": "suppressed_at",
        "CLEAN_TIME": "suppressed_at",
    },  # fmt: skip
    ignored=(
        *(c for c in MAILCHIMP_STATUS_COLUMNS if c not in ("UNSUB_TIME", "CLEAN_TIME")),
        *MAILCHIMP_COMMON_IGNORED,
        "First Name",
        "Last Name",
        "Phone Number",
        "OPTIN_TIME",
        "OPTIN_IP",
        "CONFIRM_TIME",
        "CONFIRM_IP",
    ),  # fmt: skip
)
_WOO_ORDER = (
    "order_id", "order_number", "order_number_formatted", "shipping_total",
    "shipping_tax_total", "fee_total", "fee_tax_total", "tax_total", "cart_discount",
    "order_discount", "discount_total", "order_total", "order_subtotal", "refunded_total",
    "order_currency", "payment_method", "payment_method_title", "transaction_id",
    "customer_ip_address", "customer_user_agent", "shipping_method", "customer_id",
    "customer_user", "customer_email", "billing_full_name", "billing_company", "billing_phone",
    "billing_address_1", "billing_address_2", "billing_postcode", "billing_city",
    "billing_state", "billing_country", "shipping_first_name", "shipping_last_name",
    "shipping_full_name", "shipping_company", "shipping_address_1", "shipping_address_2",
    "shipping_postcode", "shipping_city", "shipping_state", "shipping_country",
    "customer_note", "paid_date", "completed_date", "item_id", "item_product_id", "item_name",
    "item_sku", "item_quantity", "item_subtotal", "item_subtotal_tax", "item_total",
    "item_total_tax", "item_refunded", "item_refunded_qty", "item_meta", "shipping_items",
    "fee_items", "tax_items", "coupon_items", "refunds", "order_notes",
    "download_permissions_granted",
)  # fmt: skip
WOOCOMMERCE_CUSTOMERS = ImportFormat(
    "woocommerce",
    "a WooCommerce order export",
    columns={
        "billing_email": "email",
        "order_date": "purchased_at",
        "item_category": "category",
        "billing_first_name": "first_name",
        "billing_last_name": "last_name",
        "status": "order_status",
    },  # fmt: skip
    # Phone and address are in the export, but an e-mail campaign needs neither (AVG art. 5).
    ignored=_WOO_ORDER,
    local_times=True,
    category_list=True,
)
_SHOPIFY_ORDER = (
    "Financial Status", "Paid at", "Fulfillment Status", "Fulfilled at", "Accepts Marketing",
    "Currency", "Subtotal", "Shipping", "Taxes", "Total", "Discount Code", "Discount Amount",
    "Shipping Method", "Lineitem quantity", "Lineitem price", "Lineitem compare at price",
    "Lineitem sku", "Lineitem requires shipping", "Lineitem taxable",
    "Lineitem fulfillment status", "Billing Name", "Billing Street", "Billing Address1",
    "Billing Address2", "Billing Company", "Billing City", "Billing Zip", "Billing Province",
    "Billing Country", "Billing Phone", "Shipping Name", "Shipping Street", "Shipping Address1",
    "Shipping Address2", "Shipping Company", "Shipping City", "Shipping Zip",
    "Shipping Province", "Shipping Country", "Shipping Phone", "Notes", "Note Attributes",
    "Payment Method", "Payment Reference", "Refunded Amount", "Vendor", "Outstanding Balance",
    "Employee", "Location", "Device ID", "Id", "Tags", "Risk Level", "Source",
    "Lineitem discount", "Tax 1 Name", "Tax 1 Value", "Tax 2 Name", "Tax 2 Value",
    "Tax 3 Name", "Tax 3 Value", "Tax 4 Name", "Tax 4 Value", "Tax 5 Name", "Tax 5 Value",
    "Phone", "Receipt Number", "Duties", "Billing Province Name", "Shipping Province Name",
    "Payment ID", "Payment Terms Name", "Next Payment Due At", "Payment References",
)  # fmt: skip
SHOPIFY_CUSTOMERS = ImportFormat(
    "shopify",
    "a Shopify orders export",
    columns={
        "Email": "email",
        "Created at": "purchased_at",
        "Lineitem name": "category",
        "Name": "order_name",
        "Cancelled at": "cancelled_at",
    },  # fmt: skip
    ignored=_SHOPIFY_ORDER,
)

CONTACT_FORMATS = {f.name: f for f in (GENERIC, MAILCHIMP_CONTACTS, LAPOSTA_CONTACTS)}
CUSTOMER_FORMATS = {f.name: f for f in (GENERIC, WOOCOMMERCE_CUSTOMERS, SHOPIFY_CUSTOMERS)}
SUPPRESSION_FORMATS = {f.name: f for f in (GENERIC, MAILCHIMP_SUPPRESSIONS)}


@dataclass(frozen=True, slots=True)
class ImportSource:
    """How to read the file: its format, a column map and the separator (None: detect)."""

    format: str = "generic"
    column_map: str | None = None  # --map "Source column=field,..."
    delimiter: str | None = None  # --delimiter


def pick_format(formats: dict[str, ImportFormat], name: str) -> ImportFormat:
    if name not in formats:
        raise InputError(f'--format: "{name}" is not one of: {", ".join(formats)}.')
    return formats[name]


def _key(name: str) -> str:
    return " ".join(name.split()).lower()


def parse_map(spec: str | None, fields: Sequence[str]) -> dict[str, str | None]:
    """`"Source column=field,Other="` -> {source: field or None (dropped)}, keys normalised."""
    mapping: dict[str, str | None] = {}
    if not spec:
        return mapping
    for part in spec.split(","):
        if not part.strip():
            continue
        source, equals, target = part.rpartition("=")
        target = target.strip().lower()
        if not equals or not source.strip():
            raise InputError(
                f'--map: "{part.strip()}" is not like "Source column=field" (or "Source '
                'column=" to leave the column out).'
            )
        if target and target not in fields:
            raise InputError(f'--map: "{target}" is not a field; fields: {", ".join(fields)}.')
        mapping[_key(source)] = target or None
    return mapping


_DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\\t": "\t", "\t": "\t", "|": "|"}


def parse_delimiter(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw.lower() not in _DELIMITERS:
        raise InputError(f'--delimiter: "{raw}" is not one of: ",", ";", tab, "|".')
    return _DELIMITERS[raw.lower()]


def detect_delimiter(header_line: str) -> str:
    """The separator of a header line: the most frequent of `,` `;` tab outside quotes.

    Dutch and Belgian Excel saves "CSV" with `;` (the decimal comma takes `,`); tab is what a
    copy from a spreadsheet gives. A header of one column has none of them: `,`.
    """
    counts = dict.fromkeys((",", ";", "\t"), 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


@dataclass(frozen=True, slots=True)
class Header:
    fields: list[str | None]  # per position: our field, or None (left out)
    labels: dict[str, str]  # field -> the column name in the file, for messages
    ignored: list[str]  # columns the format knows and left out, in file order


def resolve_header(
    names: Sequence[str],
    *,
    file: str,
    fields: Sequence[str],
    required: Sequence[str],
    fmt: ImportFormat,
    user_map: Mapping[str, str | None],
    special: frozenset[str],
) -> Header:
    """Translate a header row; every unknown column is named in one message."""
    known = {_key(s): f for s, f in fmt.columns.items()}
    ignorable = {_key(s) for s in fmt.ignored}
    result: list[str | None] = []
    labels: dict[str, str] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for position, raw in enumerate(names, start=1):
        key = _key(raw)
        # The mailer's own format has lowercase names; a vendor's columns keep their spelling.
        name = key if fmt.generic else raw.strip()
        if not name:
            raise InputError(f"column {position} of the header has no name.", file=file, line=1)
        if key in user_map:
            target = user_map[key]
        elif key.replace(" ", "_").replace("-", "_") in special:
            raise InputError(
                f'column "{name}" holds special-category personal data (AVG art. 9) '
                "and is never stored.",
                file=file, line=1,
            )  # fmt: skip
        elif key in known:
            target = known[key]
        elif fmt.generic and key in fields:
            target = key
        elif key in ignorable:
            ignored.append(name)
            target = None
        else:
            unknown.append(name)
            continue
        if target is not None and target in labels:
            if _key(labels[target]) == key:
                raise InputError(f'column "{name}" appears twice in the header.', file=file,
                                 line=1)  # fmt: skip
            raise InputError(
                f'columns "{labels[target]}" and "{name}" both give {target}; leave one out '
                f'with --map "{name}=".',
                file=file, line=1,
            )  # fmt: skip
        if target is not None:
            labels[target] = name
        result.append(target)
    if unknown:
        quoted = ", ".join(f'"{n}"' for n in unknown)
        noun = "column" if len(unknown) == 1 else "columns"
        if fmt.generic:
            raise InputError(f"unknown {noun} {quoted}; allowed: {', '.join(fields)}.",
                             file=file, line=1)  # fmt: skip
        raise InputError(
            f"unknown {noun} {quoted} for {fmt.title}; map each to a field with --map "
            f'"{unknown[0]}=field" or leave it out with --map "{unknown[0]}="; fields: '
            f"{', '.join(fields)}.",
            file=file, line=1,
        )  # fmt: skip
    for name in required:
        if name not in labels:
            sources = [s for s, f in fmt.columns.items() if f == name]
            column = sources[0] if sources else name
            raise InputError(
                f'the required column "{column}" is missing from the header.', file=file, line=1
            )
    return Header(result, labels, ignored)
