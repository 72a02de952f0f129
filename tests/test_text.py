"""Control characters in evidence are named; anything printed to a terminal is escaped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailer.core.text import control_characters, printable


def test_line_breaks_esc_c1_separators_and_bidi_overrides_are_named_once_each() -> None:
    value = "https://x.example/\r\n\x1b[2J\x9b\u2028\u2029\u202e\u2066\x00\x1b"
    assert control_characters(value) == [
        "U+000D", "U+000A", "U+001B", "U+009B", "U+2028", "U+2029", "U+202E", "U+2066",
        "U+0000",
    ]  # fmt: skip


def test_ordinary_text_in_any_script_holds_no_control_character() -> None:
    assert control_characters("https://bakkerij.example/aanmelden?x=1 Jöran ÿ Ünïcode 東京") == []


@given(st.text())
def test_printed_text_never_holds_a_control_character(value: str) -> None:
    assert control_characters(printable(value)) == []


def test_escapes_are_visible_and_a_typed_backslash_stays_distinguishable() -> None:
    assert printable("a\nb\x1b[31m\\n\u202e") == "a\\nb\\u001b[31m\\\\n\\u202e"
