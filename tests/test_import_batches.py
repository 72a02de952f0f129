"""Large CSV imports, written in batches: one error rolls back the whole file, duplicates in
different batches merge into one contact, and progress is reported by bytes read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.errors import InputError
from mailer.store.importer import import_contacts
from tests.import_support import CONTACT_HEADER, NOTHING, NOW, counts, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files are named relative to the working directory, so messages read "contacts.csv:3: ...".
    monkeypatch.chdir(tmp_path)


def test_error_after_several_written_batches_rolls_back_the_whole_file(
    engine: Engine, settings: Settings
) -> None:
    good = [f"person{i}@example.nl,P{i},newsletter,2026-03-01,2026-03-02,," for i in range(2500)]
    path = write("contacts.csv", CONTACT_HEADER, *good, "last@example.nl,L,newsletter,,nooit,,")

    with pytest.raises(InputError, match=r"^contacts\.csv:2502: column \"confirmed_at\""):
        import_contacts(engine, settings, path, now=NOW)

    assert counts(engine) == NOTHING


def test_many_rows_across_batches_import_with_duplicates_merged(
    engine: Engine, settings: Settings
) -> None:
    # The same 1,000 people twice, so duplicates land in different batches.
    lines = [
        f"person{i % 1000}@example.nl,P{i},newsletter,2026-03-01,2026-03-02,," for i in range(2000)
    ]
    path = write("contacts.csv", CONTACT_HEADER, *lines)

    result = import_contacts(engine, settings, path, now=NOW)

    assert (result.rows, result.contacts_created, result.consent_events) == (2000, 1000, 2000)
    assert counts(engine) == {**NOTHING, "contact": 1000, "consent": 2000}


def test_a_large_import_reports_progress_by_bytes_read(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "many.csv"
    path.write_text(
        "email\n" + "".join(f"person{n}@example.nl\n" for n in range(2500)), encoding="utf-8"
    )
    seen: list[tuple[int, int]] = []
    result = import_contacts(
        engine, settings, path, now=NOW, on_progress=lambda done, total: seen.append((done, total))
    )
    size = path.stat().st_size
    assert result.rows == 2500
    assert len(seen) >= 3  # after each batch of 900 rows, and at the end
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (size, size) and all(total == size for _, total in seen)
