"""One normal form for e-mail addresses, so one person is one contact.

Every address that enters the database (import, signup form, privacy requests) goes through
`normalise_address`, and so does every address we look up: a suppression or a unique contact is
only as good as the key it is stored under.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["normalise_address", "wire_address"]

# RFC 5322 dot-atom: an ASCII local part that email-validator accepts and leaves unchanged.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def normalise_address(raw: str) -> str:
    """The normalised, lowercased form of `raw`; `ValueError` with a sentence if it is no address.

    Syntax only: deliverability (DNS) is not checked, so an import of a million rows does no
    network I/O and gives the same answer offline.
    """
    address = raw.strip()
    # Fast path for the common case (an import of a million rows spends most of its time here):
    # a plain ASCII address whose domain was validated before. Anything else, and every error,
    # goes through email-validator itself; tests/test_import_addresses.py checks both paths agree.
    local, at, domain = address.rpartition("@")
    if (
        at
        and domain.isascii()
        and len(local) <= 64  # RFC 5321 §4.5.3.1.1
        and len(address) <= 254  # RFC 5321 §4.5.3.1.3 less the angle brackets
        and _DOT_ATOM.fullmatch(local)
    ):
        checked = _checked_domain(domain)
        if checked is not None:
            return f"{local}@{checked}".lower()
    return _validated(address)


def _validated(address: str) -> str:
    try:
        validated = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        # email-validator's messages are sentences written for the person fixing the input.
        raise ValueError(str(exc)) from exc
    # RFC 5321 lets the local part be case-sensitive, but no real mailbox provider treats it so,
    # and "Jan@" and "jan@" being two contacts would let an unsubscribe miss one of them.
    return validated.normalized.lower()


@lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str | None:
    """The normalised domain if email-validator accepts it, else None (the slow path decides)."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def wire_address(address: str) -> str:
    """The address as it goes into an SMTP envelope and a To header: an internationalised
    domain as its IDNA A-label (RFC 5891), so `jan@exämple.com` needs no SMTPUTF8 at all.
    Only a non-ASCII local part (`jöran@`) stays non-ASCII: that one needs SMTPUTF8 (RFC 6531).
    """
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    try:
        ascii_domain = validate_email(address, check_deliverability=False).ascii_domain
    except EmailNotValidError:
        return address
    return f"{local}@{ascii_domain or domain}"
