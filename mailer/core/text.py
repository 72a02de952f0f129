"""Characters that must never reach stored evidence or a terminal.

Consent evidence (source URL, wording, user agent, IP) is what is shown in a complaint; a value
holding a line break, an ESC sequence or a bidi override could make `mailer consent show` print
a block that was never recorded (issue 14, row 2). `control_characters` names what a value
holds so the door (web 400, import exit 2) can refuse it; `printable` makes any value safe to
print to a terminal.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["control_characters", "json_printable", "printable", "without_addresses"]

# C0 (U+0000-U+001F, includes TAB, CR, LF, ESC), DEL and C1 (U+0080-U+009F, includes CSI),
# the Unicode line and paragraph separators, and the bidi embeddings, overrides and isolates
# (Unicode TR 9; CVE-2021-42574 "Trojan Source"), plus the implicit direction marks, and lone
# surrogates (a JSON "\ud800" decodes to one; no database can store it as text).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def control_characters(value: str) -> list[str]:
    """The control characters in `value`, each named like `U+001B`, in order, once each.

    An empty list means the value may be stored as evidence as it is.
    """
    seen: list[str] = []
    for match in _CONTROL.finditer(value):
        name = f"U+{ord(match.group()):04X}"
        if name not in seen:
            seen.append(name)
    return seen


def printable(value: str, *, escape_backslash: bool = True) -> str:
    """`value` with every control character shown as `\\u001b` (or `\\n`), safe for a terminal.

    A backslash is doubled (unless `escape_backslash` is false, for messages that quote a path),
    so an escaped form can never be confused with one already typed into the value. Other
    unprintable format characters (Unicode category Cf) are escaped too.
    """
    out: list[str] = []
    for char in value:
        if char == "\\":
            out.append("\\\\" if escape_backslash else char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif _CONTROL.match(char) or unicodedata.category(char) in ("Cf", "Cs", "Co"):
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return "".join(out)


# Anything shaped like local@domain, with or without angle brackets: an SMTP reply quotes the
# recipient ("550 5.1.1 <jan@example.nl>: Recipient address rejected").
_ADDRESS = re.compile(r"[^\s<>\"'@,;:()\[\]]+@[^\s<>\"'@,;:()\[\]]+")


def without_addresses(value: str) -> str:
    """`value` for a log line: the local part of every e-mail address replaced by `address`
    (the domain stays: README promises "domain only") and control characters escaped."""
    return printable(_ADDRESS.sub(lambda m: "address@" + m.group().rsplit("@", 1)[1], value))


# What json.dumps(ensure_ascii=False) leaves raw but a terminal acts on (it escapes C0 itself).
_JSON_UNSAFE = re.compile(
    "[\x7f-\x9f\u2028\u2029\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def json_printable(document: str) -> str:
    """JSON text from `json.dumps(..., ensure_ascii=False)` with the characters above written
    as `\\uXXXX`: the same JSON value, safe on a terminal (they only occur inside strings)."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", document)
