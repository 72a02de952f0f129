"""Customers from the shop's own order exports: WooCommerce and Shopify, one row per line item.

Only sales count (DESIGN rule 1: the address was obtained in a sale): cancelled, failed,
refunded and unpaid orders are left out and counted. The shop states once, on the command line,
whether its checkout offered the opt-out (Telecommunicatiewet 11.7 lid 3).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.errors import InputError
from mailer.store.importer import ImportSource, import_customers
from tests.import_support import NOTHING, NOW, counts, rows, utc, write

DATA = Path(__file__).parent / "data" / "imports"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in DATA.iterdir():
        shutil.copy(name, tmp_path / name.name)


def _purchases(engine: Engine) -> list[tuple[str, str, datetime, bool]]:
    emails = {c["id"]: c["email"] for c in rows(engine, "contact")}
    return [
        (emails[p["contact_id"]], p["category"], utc(p["at"]), p["optout_offered"])
        for p in rows(engine, "purchase")
    ]


def test_woocommerce_export_records_sales_only_with_every_category_of_the_line(
    engine: Engine, settings: Settings
) -> None:
    result = import_customers(
        engine, settings, Path("woocommerce-orders.csv"), now=NOW,
        source=ImportSource("woocommerce"), optout_offered=True,
    )  # fmt: skip

    assert result.rows == 19
    assert result.skipped == {
        "order status cancelled (not a sale)": 1,
        "order status failed (not a sale)": 1,
        "order status refunded (not a sale)": 1,
        "order status on-hold (not a sale)": 1,
    }
    assert "billing_phone" in result.ignored_columns  # not needed for mail: left out
    purchases = _purchases(engine)
    assert len(purchases) == result.purchases == 17
    # Shop time (Europe/Amsterdam, CET in March) stored as UTC.
    assert purchases[0] == (
        "anna.bakker@example.nl", "Gebak > Taarten", datetime(2024, 3, 2, 8, 15, tzinfo=UTC), True
    )  # fmt: skip
    jan = [p[1] for p in purchases if p[0] == "jan.jansen@example.nl"]
    assert jan == ["Gebak > Koekjes", "Cadeau"]
    # "Marloes.Vink@example.nl" and "marloes.vink@example.nl" are one customer.
    assert [p[1] for p in purchases if p[0] == "marloes.vink@example.nl"] == ["Brood", "Gebak"]
    emails = {c["email"] for c in rows(engine, "contact")}
    assert not emails & {"tess.lammers@example.nl", "olaf.veenstra@example.nl",
                         "hugo.blom@example.nl", "yara.kuipers@example.nl"}  # fmt: skip
    contact = next(c for c in rows(engine, "contact") if c["email"] == "bas.timmer@example.nl")
    assert (contact["first_name"], contact["phone"], contact["street"]) == ("Bas", None, None)


def test_a_shop_export_needs_the_opt_out_stated_on_the_command_line(
    engine: Engine, settings: Settings
) -> None:
    with pytest.raises(InputError) as caught:
        import_customers(engine, settings, Path("woocommerce-orders.csv"), now=NOW,
                         source=ImportSource("woocommerce"))  # fmt: skip

    assert str(caught.value) == (
        "woocommerce-orders.csv: a WooCommerce order export has no optout_offered column; say "
        "whether the shop offered an opt-out when it collected these addresses "
        "(Telecommunicatiewet 11.7 lid 3): --optout-offered or --no-optout-offered."
    )
    assert counts(engine) == NOTHING


def test_shopify_export_reads_its_times_and_leaves_out_every_line_of_a_cancelled_order(
    engine: Engine, settings: Settings
) -> None:
    result = import_customers(
        engine, settings, Path("shopify-orders.csv"), now=NOW, source=ImportSource("shopify"),
        optout_offered=False,
    )  # fmt: skip

    assert result.skipped == {"order cancelled (not a sale)": 2}
    assert "Accepts Marketing" in result.ignored_columns
    assert _purchases(engine) == [
        ("emma@example.nl", "Appeltaart", datetime(2025, 10, 7, 7, 50, 26, tzinfo=UTC), False),
        ("emma@example.nl", "Volkorenbrood", datetime(2025, 10, 7, 7, 50, 26, tzinfo=UTC), False),
        ("noah@example.nl", "Kwarktaart", datetime(2025, 10, 8, 12, 21, 21, tzinfo=UTC), False),
        ("liam@example.nl", "Speculaas", datetime(2025, 10, 26, 10, 30, tzinfo=UTC), False),
    ]


def test_shopify_category_column_can_be_mapped(engine: Engine, settings: Settings) -> None:
    source = ImportSource("shopify", column_map="Vendor=category,Lineitem name=")
    path = write(
        "orders.csv",
        "Name,Email,Created at,Lineitem name,Vendor",
        "#1,emma@example.nl,2025-10-07 09:50:26 +0200,Appeltaart,Gebak",
    )

    import_customers(engine, settings, path, now=NOW, source=source, optout_offered=True)

    assert [p[1] for p in _purchases(engine)] == ["Gebak"]


def test_reimporting_a_shop_export_adds_nothing(engine: Engine, settings: Settings) -> None:
    path, source = Path("woocommerce-orders.csv"), ImportSource("woocommerce")
    import_customers(engine, settings, path, now=NOW, source=source, optout_offered=True)

    again = import_customers(engine, settings, path, now=NOW, source=source, optout_offered=True)

    assert (again.contacts_created, again.contacts_updated, again.purchases) == (0, 0, 0)
