"""Signed links: round trips, no forging, no cross-use, key rotation, expiry with a moved clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from mailer.core.tokens import CONFIRM_SALT, UNSUBSCRIBE_SALT, TokenSigner, address_hash
from mailer.errors import ExpiredToken, ForgedToken

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
TTL = 48 * 3600
contact_ids = st.integers(min_value=1, max_value=2**53)
list_names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)


@given(contact_ids, list_names)
def test_an_unsubscribe_token_names_its_contact_and_list(contact_id: int, list_name: str) -> None:
    signer = TokenSigner(["k1"])
    claim = signer.read_unsubscribe(signer.unsubscribe_token(contact_id, list_name))
    assert (claim.contact_id, claim.list_name) == (contact_id, list_name)


@given(contact_ids, st.lists(list_names, min_size=1, max_size=4))
def test_a_confirm_token_names_its_contact_lists_and_signing_time(
    contact_id: int, names: list[str]
) -> None:
    signer = TokenSigner(["k1"])
    token = signer.confirm_token(contact_id, names, now=T0)
    claim = signer.read_confirm(token, max_age_seconds=TTL, now=T0 + timedelta(hours=1))
    assert (claim.contact_id, claim.list_names, claim.signed_at) == (contact_id, tuple(names), T0)


def _with_payload(token: str, payload: object) -> str:
    """`token` with its payload replaced and its signature kept: what a forger would try."""
    signature = token.rsplit(".", 1)[1]
    return URLSafeSerializer("irrelevant").dump_payload(payload).decode() + "." + signature


@pytest.mark.parametrize(
    "payload", [[8, "newsletter"], [7, "offers"], [7, "newsletter", "x"], "7"],
    ids=["another contact", "another list", "extra field", "not a list"],
)  # fmt: skip
def test_an_unsubscribe_token_cannot_be_turned_into_another_persons_or_lists(
    payload: object,
) -> None:
    signer = TokenSigner(["k1"])
    token = signer.unsubscribe_token(7, "newsletter")
    with pytest.raises(ForgedToken) as forged:
        signer.read_unsubscribe(_with_payload(token, payload))
    assert str(forged.value) == "This unsubscribe link is not valid."


def test_a_changed_signature_is_forged() -> None:
    signer = TokenSigner(["k1"])
    payload, signature = signer.unsubscribe_token(7, "newsletter").rsplit(".", 1)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(ForgedToken):
        signer.read_unsubscribe(f"{payload}.{flipped}")


@given(st.text(max_size=80))
def test_any_made_up_link_is_forged_never_a_crash(text: str) -> None:
    signer = TokenSigner(["k1"])
    with pytest.raises(ForgedToken):
        signer.read_unsubscribe(text)
    with pytest.raises(ForgedToken):
        signer.read_confirm(text, max_age_seconds=TTL, now=T0)


def test_an_unsubscribe_token_is_not_a_confirm_token_and_vice_versa() -> None:
    signer = TokenSigner(["k1"])
    unsubscribe = signer.unsubscribe_token(7, "newsletter")
    confirm = signer.confirm_token(7, ["newsletter"], now=T0)
    with pytest.raises(ForgedToken, match="^This confirmation link is not valid.$"):
        signer.read_confirm(unsubscribe, max_age_seconds=TTL, now=T0)
    with pytest.raises(ForgedToken, match="^This unsubscribe link is not valid.$"):
        signer.read_unsubscribe(confirm)


def test_the_same_key_under_the_other_purposes_salt_does_not_verify() -> None:
    # Signed with our key but the confirm salt, shaped like an unsubscribe payload.
    crossed = URLSafeSerializer(["k1"], salt=CONFIRM_SALT).dumps([7, "newsletter"])
    with pytest.raises(ForgedToken):
        TokenSigner(["k1"]).read_unsubscribe(crossed)
    crossed_timed = URLSafeTimedSerializer(["k1"], salt=UNSUBSCRIBE_SALT).dumps([7, ["news"]])
    with pytest.raises(ForgedToken):
        TokenSigner(["k1"]).read_confirm(crossed_timed, max_age_seconds=TTL)


def test_tokens_signed_with_an_old_key_still_verify_after_rotation() -> None:
    old = TokenSigner(["old"])
    rotated = TokenSigner(["old", "new"])
    claim = rotated.read_unsubscribe(old.unsubscribe_token(3, "offers"))
    assert (claim.contact_id, claim.list_name) == (3, "offers")
    confirmed = rotated.read_confirm(
        old.confirm_token(3, ["offers"], now=T0), max_age_seconds=TTL, now=T0
    )
    assert (confirmed.contact_id, confirmed.list_names) == (3, ("offers",))


def test_after_rotation_the_newest_key_signs() -> None:
    token = TokenSigner(["old", "new"]).unsubscribe_token(3, "offers")
    assert TokenSigner(["new"]).read_unsubscribe(token).contact_id == 3
    with pytest.raises(ForgedToken):
        TokenSigner(["old"]).read_unsubscribe(token)


def test_a_token_signed_by_an_unknown_key_is_forged() -> None:
    stranger = TokenSigner(["someone-elses-key"])
    ours = TokenSigner(["old", "new"])
    with pytest.raises(ForgedToken):
        ours.read_unsubscribe(stranger.unsubscribe_token(3, "offers"))
    with pytest.raises(ForgedToken):
        ours.read_confirm(stranger.confirm_token(3, ["offers"], now=T0), max_age_seconds=TTL,
                          now=T0)  # fmt: skip
    # A key that was retired (dropped from the list) no longer verifies.
    with pytest.raises(ForgedToken):
        TokenSigner(["new"]).read_unsubscribe(TokenSigner(["old"]).unsubscribe_token(3, "offers"))


def test_a_confirm_token_is_valid_up_to_its_time_to_live() -> None:
    signer = TokenSigner(["k1"])
    token = signer.confirm_token(5, ["newsletter"], now=T0)
    claim = signer.read_confirm(token, max_age_seconds=TTL, now=T0 + timedelta(seconds=TTL))
    assert claim.contact_id == 5


def test_an_expired_confirm_token_says_when_it_was_signed() -> None:
    signer = TokenSigner(["k1"])
    token = signer.confirm_token(5, ["newsletter"], now=T0)
    with pytest.raises(ExpiredToken) as expired:
        signer.read_confirm(token, max_age_seconds=TTL, now=T0 + timedelta(hours=48, seconds=1))
    assert str(expired.value) == "This confirmation link has expired."
    assert expired.value.signed_at == T0
    assert token not in str(expired.value)


def test_an_expired_token_of_an_unknown_key_is_forged_not_expired() -> None:
    token = TokenSigner(["stranger"]).confirm_token(5, ["newsletter"], now=T0)
    with pytest.raises(ForgedToken):
        TokenSigner(["k1"]).read_confirm(token, max_age_seconds=TTL, now=T0 + timedelta(days=30))


def test_a_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one secret key is needed"):
        TokenSigner([])


def test_the_address_hash_ignores_case_and_surrounding_spaces() -> None:
    assert address_hash(" Anna@Example.NL\t", "k") == address_hash("anna@example.nl", "k")
    assert address_hash("anna@example.nl", "k") != address_hash("anne@example.nl", "k")


def test_the_address_hash_depends_on_the_key_and_does_not_show_the_address() -> None:
    assert address_hash("anna@example.nl", "k") != address_hash("anna@example.nl", "k2")
    digest = address_hash("anna@example.nl", "k")
    assert len(digest) == 64 and "anna" not in digest
