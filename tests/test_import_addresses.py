"""Address normalisation on import: one person is one contact however the address is written,
and the fast path of `normalise_address` agrees with email-validator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.core.addresses import _validated, normalise_address
from mailer.store.importer import import_contacts
from tests.import_support import NOW, rows, write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files are named relative to the working directory, so messages read "contacts.csv:3: ...".
    monkeypatch.chdir(tmp_path)


def test_addresses_are_normalised_so_one_person_is_one_contact(
    engine: Engine, settings: Settings
) -> None:
    path = write(
        "contacts.csv",
        "email,first_name",
        '" Jan@Example.NL ",Jan',
        "jan@example.nl,",
        "JAN@EXAMPLE.NL,Johannes",
    )

    result = import_contacts(engine, settings, path, now=NOW)

    assert result.rows == 3
    assert result.contacts_created == 1
    [contact] = rows(engine, "contact")
    assert contact["email"] == "jan@example.nl"
    # Rows apply in file order; an empty value never erases a stored one.
    assert contact["first_name"] == "Johannes"


def test_normalise_address_lowercases_and_strips() -> None:
    assert normalise_address(" Jan@Example.NL ") == "jan@example.nl"


def test_normalise_address_raises_email_validators_sentence() -> None:
    with pytest.raises(ValueError, match=r"^There must be something after the @-sign\.$"):
        normalise_address("jan@")


ADDRESS_PARTS = st.sampled_from(
    ["jan", "Jan", "a.b", ".a", "a.", "a..b", "x+tag", '"q"', "é", "ß", " ", "@", "<", ">",
     "example.nl", "Example.NL", "bakkerij.example", "b.test", "localhost", "xn--bcher-kva.de",
     "bücher.de", "[192.0.2.1]", "-a.nl", "a-.nl", "_", "=", "~", "!", "#", "a" * 64, "b" * 70]
)  # fmt: skip


@given(st.lists(ADDRESS_PARTS, max_size=6).map("".join))
def test_fast_path_of_normalise_address_agrees_with_email_validator(raw: str) -> None:
    def outcome(normalise: Callable[[str], str]) -> str:
        try:
            return normalise(raw)
        except ValueError as exc:
            return f"error: {exc}"

    assert outcome(normalise_address) == outcome(lambda a: _validated(a.strip()))
