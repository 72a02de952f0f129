"""VERP return paths: they name one delivery, survive key rotation, and cannot be made up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailer.core.verp import read_verp, verp_address

RETURN_PATH = "bounces@bakkerij.example"
OLD, NEW = "old-key-0123456789abcdef0123456789", "new-key-0123456789abcdef0123456789"


@given(st.integers(1, 10**12))
def test_a_return_path_names_its_delivery_through_a_key_rotation(delivery_id: int) -> None:
    address = verp_address(RETURN_PATH, delivery_id, [OLD])
    assert address.startswith("bounces+") and address.endswith("@bakkerij.example")
    assert read_verp(f"To: <{address}>", RETURN_PATH, [OLD, NEW]) == delivery_id
    # Some servers lowercase or uppercase what they return.
    assert read_verp(address.upper(), RETURN_PATH, [OLD, NEW]) == delivery_id
    assert read_verp(address, RETURN_PATH, [NEW]) is None  # the old key is gone


@given(st.integers(1, 10**12), st.integers(1, 10**12))
def test_a_return_path_cannot_be_moved_to_another_delivery(mine: int, theirs: int) -> None:
    address = verp_address(RETURN_PATH, mine, [NEW])
    if mine != theirs:
        moved = address.replace(f"+{mine}-", f"+{theirs}-")
        assert read_verp(moved, RETURN_PATH, [NEW]) is None


def test_only_our_return_path_counts() -> None:
    address = verp_address(RETURN_PATH, 42, [NEW])
    assert (
        read_verp(address.replace("bakkerij.example", "evil.example"), RETURN_PATH, [NEW]) is None
    )
    assert read_verp(address.replace("bounces+", "other+"), RETURN_PATH, [NEW]) is None
    assert read_verp("bounces@bakkerij.example", RETURN_PATH, [NEW]) is None
