"""DKIM helpers of the tests: a dual-signing `[dkim]` section, and dkimpy as the verifier."""

from __future__ import annotations

import re
from typing import Any

import dkim

from mailer.delivery.dkimkeys import GeneratedKey


def dual_dkim(rsa: GeneratedKey, ed: GeneratedKey) -> dict[str, Any]:
    return {
        "selector": "rsa2026", "domain": "bakkerij.example", "algorithm": "rsa-sha256",
        "private_key_file": str(rsa.private_key_file),
        "second_selector": "ed2026", "second_algorithm": "ed25519-sha256",
        "second_private_key_file": str(ed.private_key_file),
    }  # fmt: skip


def verifies(data: bytes, keys: list[GeneratedKey]) -> list[bool]:
    """Each DKIM-Signature of `data`, top first, checked by dkimpy against `keys`' records."""
    records = {key.dns_name.encode(): key.txt_value.encode() for key in keys}

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    def one(index: int) -> bool:
        try:
            return bool(dkim.DKIM(data).verify(idx=index, dnsfunc=dns))
        except dkim.ValidationError:  # what dkim.verify() reports as False
            return False

    count = len(re.findall(rb"^DKIM-Signature:", data, re.MULTILINE))
    return [one(index) for index in range(count)]
