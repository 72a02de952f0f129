"""VERP (variable envelope return path): the envelope sender names the delivery it carries.

With `bounces.return_path = "bounces@bakkerij.example"` the message to one recipient goes out
with MAIL FROM `bounces+<delivery id>-<mac>@bakkerij.example`. A bounce goes back to that
address whatever it quotes of the message, so the bounce mailbox knows which delivery it is
about; the keyed MAC (lowercase hex: some servers lowercase local parts) means nobody can
make up a return path that names someone else's delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

__all__ = ["read_verp", "verp_address"]

_SALT = b"mailer.verp.v1"
_FIND = re.compile(r"([A-Za-z0-9_.-]+)\+(\d{1,18})-([0-9a-fA-F]{16})@([A-Za-z0-9.-]+)")


def _mac(delivery_id: int, key: str) -> str:
    message = _SALT + b"\x00" + str(delivery_id).encode("ascii")
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()[:16]


def verp_address(return_path: str, delivery_id: int, keys: Sequence[str]) -> str:
    """`bounces+<id>-<mac>@domain` for `return_path` `bounces@domain`; the newest key signs."""
    local, domain = return_path.rsplit("@", 1)
    return f"{local}+{delivery_id}-{_mac(delivery_id, keys[-1])}@{domain}"


def read_verp(text: str, return_path: str, keys: Sequence[str]) -> int | None:
    """The delivery id of the first correctly signed VERP address of ours in `text`, or None."""
    local, domain = (part.lower() for part in return_path.rsplit("@", 1))
    for found in _FIND.finditer(text):
        if found.group(1).lower() != local or found.group(4).lower() != domain:
            continue
        delivery_id = int(found.group(2))
        mac = found.group(3).lower()
        if any(hmac.compare_digest(mac, _mac(delivery_id, key)) for key in keys):
            return delivery_id
    return None
