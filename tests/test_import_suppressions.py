"""Suppressions import: Mailchimp's unsubscribed and cleaned exports (or any list of addresses)
become keyed-hash suppressions; never an address in clear, never a lifted suppression."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.core.tokens import address_hashes
from mailer.errors import InputError
from mailer.store.importer import ImportSource
from mailer.store.models import SuppressionReason
from mailer.store.suppression_import import SuppressionImportResult, import_suppressions
from tests.import_support import NOTHING, NOW, counts, rows, utc, write

DATA = Path(__file__).parent / "data" / "imports"
MAILCHIMP = ImportSource("mailchimp")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in DATA.iterdir():
        shutil.copy(name, tmp_path / name.name)


def test_mailchimp_unsubscribed_export_suppresses_every_address_as_a_keyed_hash_only(
    engine: Engine, settings: Settings
) -> None:
    result = import_suppressions(
        engine, settings, Path("mailchimp-unsubscribed.csv"), now=NOW, reason=None,
        source=MAILCHIMP,
    )  # fmt: skip

    assert result == SuppressionImportResult(
        rows=6, added=6, already_suppressed=0, reason=SuppressionReason.UNSUBSCRIBED, scope=None,
        ignored_columns=result.ignored_columns,
    )  # fmt: skip
    assert "UNSUB_REASON" in result.ignored_columns
    assert counts(engine) == {**NOTHING, "suppression": 6}  # no contact is created
    [sanne] = [
        s for s in rows(engine, "suppression")
        if s["address_hash"] in address_hashes("sanne.visser@example.nl", settings.secret_keys)
    ]  # fmt: skip
    assert (sanne["reason"], sanne["scope"]) == ("unsubscribed", None)
    assert utc(sanne["at"]) == datetime(2024, 2, 3, 19, 20, 1, tzinfo=UTC)
    stored = " ".join(str(v) for s in rows(engine, "suppression") for v in s.values())
    assert "@" not in stored and "kees" not in stored.lower()


def test_mailchimp_cleaned_export_is_hard_bounces(engine: Engine, settings: Settings) -> None:
    result = import_suppressions(
        engine, settings, Path("mailchimp-cleaned.csv"), now=NOW, reason=None, source=MAILCHIMP
    )

    assert (result.added, result.reason) == (4, SuppressionReason.HARD_BOUNCE)
    assert {s["reason"] for s in rows(engine, "suppression")} == {"hard_bounce"}


def test_reimport_adds_nothing_and_counts_the_already_suppressed(
    engine: Engine, settings: Settings
) -> None:
    path = Path("mailchimp-unsubscribed.csv")
    import_suppressions(engine, settings, path, now=NOW, reason=None, source=MAILCHIMP)

    again = import_suppressions(engine, settings, path, now=NOW, reason=None, source=MAILCHIMP)

    assert (again.added, again.already_suppressed) == (0, 6)
    assert counts(engine)["suppression"] == 6


def test_generic_file_needs_a_reason_and_can_be_scoped_to_one_list(
    engine: Engine, settings: Settings
) -> None:
    path = write(
        "bounces.csv",
        "email,suppressed_at",
        "Jan@Example.nl,2025-01-01T10:00:00",
        "piet@example.nl,",
        "jan@example.nl,2025-02-01T10:00:00",
    )
    with pytest.raises(InputError) as caught:
        import_suppressions(engine, settings, path, now=NOW, reason=None)
    assert str(caught.value) == (
        "--reason: say why these addresses are suppressed: unsubscribed, objected, hard_bounce, "
        "complaint."
    )

    result = import_suppressions(
        engine, settings, path, now=NOW, reason=SuppressionReason.COMPLAINT, list_name="offers"
    )

    assert (result.rows, result.added, result.already_suppressed) == (3, 2, 1)
    stored = rows(engine, "suppression")
    assert {(s["reason"], s["scope"]) for s in stored} == {("complaint", "offers")}
    assert sorted(utc(s["at"]) for s in stored) == [datetime(2025, 1, 1, 10, tzinfo=UTC), NOW]


def test_bad_row_is_refused_naming_the_line_and_nothing_is_written(
    engine: Engine, settings: Settings
) -> None:
    path = write("unsubs.csv", "email", "jan@example.nl", "not-an-address")

    with pytest.raises(InputError) as caught:
        import_suppressions(engine, settings, path, now=NOW, reason=SuppressionReason.OBJECTED)

    assert str(caught.value).startswith(
        'unsubs.csv:3: column "email": "not-an-address" is not a valid e-mail address'
    )
    assert counts(engine) == NOTHING


def test_erased_is_not_an_importable_reason(engine: Engine, settings: Settings) -> None:
    path = write("unsubs.csv", "email", "jan@example.nl")

    with pytest.raises(InputError) as caught:
        import_suppressions(engine, settings, path, now=NOW, reason=SuppressionReason.ERASED)

    assert str(caught.value) == (
        '--reason: "erased" cannot be imported; reasons: unsubscribed, objected, hard_bounce, '
        "complaint."
    )


def test_the_subscribed_export_is_not_taken_for_an_unsubscribed_one(
    engine: Engine, settings: Settings
) -> None:
    with pytest.raises(InputError) as caught:
        import_suppressions(engine, settings, Path("mailchimp-subscribed.csv"), now=NOW,
                            reason=None, source=MAILCHIMP)  # fmt: skip

    assert str(caught.value) == (
        "mailchimp-subscribed.csv: this is not a Mailchimp unsubscribed or cleaned export: it "
        "has no UNSUB_TIME or CLEAN_TIME column. The subscribed export goes to `mailer contacts "
        "import --format mailchimp`; for another file, give --reason."
    )
    assert counts(engine) == NOTHING
