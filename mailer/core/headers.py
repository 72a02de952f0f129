"""Header values: checked for injection, RFC 2047-encoded and folded (RFC 5322), all pure."""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.header import Header

from mailer.errors import HeaderInjectionError

__all__ = ["check_header_value", "encode_address", "encode_header", "encode_phrase"]

_LINE_BREAK = re.compile(r"[\r\n]")
# Sent as-is only when plain printable ASCII: no control characters, nothing a parser would take
# for an RFC 2047 encoded word ("=?"), and no word too long to fold under 78 octets.
_NEEDS_ENCODING = re.compile(r"[^\x20-\x7e]|=\?|[^ ]{60}|^ | $|  ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, C1, line/paragraph separators
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+")  # RFC 5322 atext, without "=" and "?"


def check_header_value(name: str, value: str) -> str:
    if _LINE_BREAK.search(value):
        raise HeaderInjectionError(f"the {name} header value contains a line break")
    if _CONTROL.search(value):
        # Parsers treat some of these (U+001C-U+001E, U+0085) as line breaks or whitespace.
        raise HeaderInjectionError(f"the {name} header value contains a control character")
    return value


def encode_header(name: str, value: str) -> str:
    """`Name: value` as folded, RFC 2047-encoded header lines (no trailing CRLF).

    RFC 5322 §2.1.1: lines end in CRLF and stay under 998 octets (we fold at 78); non-ASCII
    text goes in RFC 2047 encoded words, which can be split anywhere a long word cannot.
    """
    check_header_value(name, value)
    plain = not _NEEDS_ENCODING.search(value)
    if plain and len(name) + len(value) < 76:
        return f"{name}: {value}"
    encoded = Header(value, "us-ascii" if plain else "utf-8", header_name=name)
    return f"{name}: " + encoded.encode(linesep="\r\n")


def encode_phrase(text: str) -> str:
    """A display name (RFC 5322 phrase): a quoted string, or atoms and RFC 2047 encoded words.

    "Zoë van 't Hoff" becomes `=?utf-8?b?Wm/Dqw==?= van 't Hoff`: only runs of words that need
    it are encoded, each run in as few encoded words as fit, since readers drop the space
    between two encoded words (RFC 2047 §6.2) and Python's parser adds one there.
    """
    check_header_value("display name", text)
    if not _NEEDS_ENCODING.search(text) and len(text) <= 60:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if text != " ".join(text.split()):  # odd spacing survives only inside one encoding
        return _encoded_words(text)
    tokens: list[str] = []
    run: list[str] = []
    for word in [*text.split(" "), ""]:
        if word and _ATOM.fullmatch(word) and len(word) < 60:
            if run:
                tokens.append(_encoded_words(" ".join(run)))
                run = []
            tokens.append(word)
        elif word:
            run.append(word)
    if run:
        tokens.append(_encoded_words(" ".join(run)))
    return _fold(tokens)


def _encoded_words(text: str) -> str:
    # maxlinelen 70: room for "From: " in front of a 70-octet encoded word on the first line.
    return Header(text, "utf-8", maxlinelen=70).encode(linesep="\r\n")


def _fold(tokens: Sequence[str], width: int = 72) -> str:
    # RFC 5322 §2.2.3: fold at the spaces between tokens, keeping lines near 78 octets.
    lines = [""]
    for token in tokens:
        last = lines[-1]
        if last and len(last) + 1 + len(token.split("\r\n")[0]) > width:
            lines.append(token)
        else:
            lines[-1] = f"{last} {token}" if last else token
    return "\r\n ".join(lines)


def encode_address(name: str | None, address: str, *, utf8: bool = False) -> str:
    """A mailbox `Display Name <addr>`, the name quoted or RFC 2047-encoded as needed.

    `utf8`: the message goes out with SMTPUTF8, so a non-ASCII address may stand in the header
    as UTF-8 (RFC 6532 §3.2); the transport refuses such a message to a server without it.
    """
    check_header_value("address", address)
    if not address.isascii() and not utf8:
        # Would need SMTPUTF8 end to end (RFC 6531); refused rather than sent mangled.
        raise HeaderInjectionError(f"the address {address!r} is not ASCII")
    if name:
        if _LINE_BREAK.search(name):  # header injection: refused, never cleaned up
            raise HeaderInjectionError("the display name header value contains a line break")
        # Other control characters in a contact's name are noise, not an attack: blanked, so
        # one odd row cannot stop a campaign.
        name = " ".join(_CONTROL.sub(" ", name).split())
    if not name:
        return address
    phrase = encode_phrase(name)
    # Fold before <address> when the line would pass 78 octets with "From: " in front.
    fits = len(phrase.rsplit("\r\n", 1)[-1]) + len(address) + 3 <= 70
    return f"{phrase} <{address}>" if fits else f"{phrase}\r\n <{address}>"
