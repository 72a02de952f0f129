"""Signed links: round trips, no forging, no cross-use, key rotation, expiry with a moved clock."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from mailer.core.tokens import (
    CONFIRM_SALT,
    OBJECTION_BASES,
    UNSUBSCRIBE_SALT,
    TokenSigner,
    address_hash,
    address_hashes,
)
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


@given(
    contact_ids,
    st.one_of(list_names, st.text(min_size=1, max_size=80)),  # also names zlib would shorten
    st.sampled_from([None, "consent", "existing_customer", "role_address"]),
    st.one_of(st.none(), st.emails()),
)
def test_an_unsubscribe_token_is_an_itsdangerous_token_and_the_same_bytes_when_uncompressed(
    contact_id: int, list_name: str, basis: str | None, email: str | None
) -> None:
    # The token is made without itsdangerous (mailer.core.tokens._UnsubscribeDumps): it must
    # still be what URLSafeSerializer reads, and, except where itsdangerous would compress
    # the payload, the very bytes it writes.
    token = TokenSigner(["k0", "k1"]).unsubscribe_token(contact_id, list_name, basis, email)
    reference = URLSafeSerializer("k1", salt=UNSUBSCRIBE_SALT)
    payload = reference.loads(token)
    again = reference.dumps(payload)
    assert token == again or again.startswith(".")
    claim = TokenSigner(["k0", "k1"]).read_unsubscribe(token)
    assert (claim.contact_id, claim.list_name) == (contact_id, list_name)
    assert claim.basis == (basis if basis in OBJECTION_BASES else None)
    if email:  # bound to the address it was made for
        assert TokenSigner.made_for(claim, email)
        assert not TokenSigner.made_for(claim, "x" + email)


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


@given(st.text(min_size=1, max_size=200), st.emails())
def test_the_address_hash_is_hmac_sha256_of_the_context_and_the_address(
    key: str, email: str
) -> None:
    # address_hash builds the HMAC from two hash states per key; any key length (over
    # SHA-256's 64-byte block too) gives what the hmac module gives.
    expected = hmac.new(
        key.encode("utf-8"),
        b"mailer.suppression.v1:" + email.strip().lower().encode("utf-8"),
        hashlib.sha256,
    ).hexdigest()
    assert address_hash(email, key) == expected


# -- known answers: what an earlier release stored or mailed must still match -----------------
# These values were computed by release 0.1 and are stored in databases and sent in mail. A
# change of scheme (another hash, a dropped context, another salt) would silently stop matching
# every stored suppression or break every link in old mail: such a change needs a migration, and
# this test is what says so.
RELEASE_KEY = "test-secret-key-0123456789abcdef"
ANNA_HASH = "a656e3177ebe8a1734f0226726b69b39c141b6c0607f3b9b8f8fa6179e9dcb26"
NEW_KEY_HASH = "931b6c7171af94cdf0aa0d62ff2f983b86b8c4640a789889e3339e9bac7d082c"
OLD_KEY_HASH = "4b065a807c35b7d4f371d5a7d29f2d6288c9c758b73e823eb9e1695f53c152e0"
UNSUBSCRIBE_LINK_TOKEN = "WzQyLCJuZXdzbGV0dGVyIl0.J23LI-MlHnTj46imt1uPRtXnYAA"
CONFIRM_LINK_TOKEN = "WzQyLFsibmV3c2xldHRlciIsIm9mZmVycyJdXQ.aaQqQA.LqDAx3HYjffc2-gVHYMN7KZ-oYU"


def test_the_address_hash_of_an_earlier_release_still_matches() -> None:
    assert address_hash("anna@example.nl", RELEASE_KEY) == ANNA_HASH
    assert address_hash("  ANNA@example.NL ", RELEASE_KEY) == ANNA_HASH


def test_the_hashes_come_newest_key_first_so_new_suppressions_use_the_newest_key() -> None:
    # The first hash is the one a new suppression is stored under (delivery/sender.py), the
    # rest recognise the suppressions stored before each rotation.
    assert address_hashes("anna@example.nl", ["old-key", "new-key"]) == [
        NEW_KEY_HASH,
        OLD_KEY_HASH,
    ]
    assert address_hashes("anna@example.nl", ["new-key"]) == [NEW_KEY_HASH]


def test_links_mailed_by_an_earlier_release_still_work() -> None:
    signer = TokenSigner(["release-0.1-key"])
    claim = signer.read_unsubscribe(UNSUBSCRIBE_LINK_TOKEN)
    assert (claim.contact_id, claim.list_name) == (42, "newsletter")
    confirmed = signer.read_confirm(CONFIRM_LINK_TOKEN, max_age_seconds=TTL, now=T0)
    assert (confirmed.contact_id, confirmed.list_names, confirmed.signed_at) == (
        42,
        ("newsletter", "offers"),
        T0,
    )


def test_a_validly_signed_unsubscribe_payload_of_the_wrong_types_is_forged() -> None:
    # Signed with our key and salt (as a leaked old format might be), but not (int, str).
    for payload in (["7", "newsletter"], [7, 8]):
        token = URLSafeSerializer(["k1"], salt=UNSUBSCRIBE_SALT).dumps(payload)
        with pytest.raises(ForgedToken) as forged:
            TokenSigner(["k1"]).read_unsubscribe(token)
        assert str(forged.value) == "This unsubscribe link is not valid."


def test_a_link_that_is_not_a_token_at_all_says_it_is_not_valid() -> None:
    with pytest.raises(ForgedToken) as unsubscribe:
        TokenSigner(["k1"]).read_unsubscribe("not-a-token")
    assert str(unsubscribe.value) == "This unsubscribe link is not valid."
    with pytest.raises(ForgedToken) as confirm:
        TokenSigner(["k1"]).read_confirm("not-a-token", max_age_seconds=TTL, now=T0)
    assert str(confirm.value) == "This confirmation link is not valid."
