"""Settings: a TOML file read into typed, validated values.

A bad, unknown or missing key raises `ConfigError` naming the file, the line where we can find
it, and the dotted key (`smtp.port`). Secrets come from the environment, never from the file:
`MAILER_SECRET_KEY` (several keys separated by commas, oldest first, for rotation; the last one
signs), `MAILER_HASH_KEY` (optional: the key of the suppression hashes, never rotated; see
docs/security.md) and `MAILER_SMTP_PASSWORD`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from mailer.config_sections import (
    BounceSettings,
    DatabaseSettings,
    DkimSettings,
    GuardSettings,
    ListSettings,
    ListText,
    PolicySettings,
    SchedulerSettings,
    SenderSettings,
    SmtpSettings,
    ThrottleSettings,
    WebhookSettings,
    WebSettings,
    WorkerSettings,
    _Section,
)
from mailer.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MIN_SECRET_KEY_BYTES",
    "BounceSettings",
    "DatabaseSettings",
    "DkimSettings",
    "GuardSettings",
    "ListSettings",
    "ListText",
    "PolicySettings",
    "SchedulerSettings",
    "SenderSettings",
    "Settings",
    "SmtpSettings",
    "ThrottleSettings",
    "WorkerSettings",
    "WebSettings",
    "WebhookSettings",
    "load_settings",
    "parse_settings",
    "hash_keys_from_env",
    "secret_keys_from_env",
]

DEFAULT_CONFIG_PATH = "mailer.toml"
# A signing key shorter than this can be guessed: HMAC-SHA256 wants 256 bits (RFC 2104 §3).
MIN_SECRET_KEY_BYTES = 32


class Settings(_Section):
    locale: Literal["nl", "en"] = "nl"
    # Extra folder searched before the bundled templates/ (your own campaign templates).
    templates_dir: str | None = None
    sender: SenderSettings
    smtp: SmtpSettings = SmtpSettings()
    throttle: ThrottleSettings = ThrottleSettings()
    worker: WorkerSettings = WorkerSettings()
    database: DatabaseSettings = DatabaseSettings()
    web: WebSettings = WebSettings()
    policy: PolicySettings = PolicySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    bounces: BounceSettings = BounceSettings()
    guard: GuardSettings = GuardSettings()
    webhooks: WebhookSettings = WebhookSettings()
    lists: dict[str, ListSettings] = Field(min_length=1)
    dkim: DkimSettings | None = None

    # Filled from the environment, not the file.
    secret_keys: tuple[str, ...] = ()
    # MAILER_HASH_KEY: keys of the suppression hashes only (they sign nothing), first one hashes.
    hash_keys: tuple[str, ...] = ()
    smtp_password: str = ""
    postmark_webhook_password: str = ""  # MAILER_POSTMARK_WEBHOOK_PASSWORD
    mailgun_signing_key: str = ""  # MAILER_MAILGUN_SIGNING_KEY
    source: str = "<settings>"

    @field_validator("lists")
    @classmethod
    def _list_names(cls, value: dict[str, ListSettings]) -> dict[str, ListSettings]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
                raise ValueError(
                    f'list name "{name}" must be lowercase letters, digits, "-" or "_"'
                )
        return value

    def require_secret_keys(self) -> tuple[str, ...]:
        if not self.secret_keys:
            raise ConfigError(
                "MAILER_SECRET_KEY is not set; links in mail must be signed. "
                "Set it to a long random string.",
                file=self.source,
            )
        for number, key in enumerate(self.secret_keys, start=1):
            if len(key.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
                count = len(self.secret_keys)
                which = "the key" if count == 1 else f"key {number} of {count}"
                # Never the key itself in a message: only its length.
                raise ConfigError(
                    f"{which} is {len(key.encode('utf-8'))} bytes long; a signing key must be "
                    f"at least {MIN_SECRET_KEY_BYTES} bytes of randomness. Make one with: "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' "
                    "(to keep old suppressions, keep the old key in MAILER_HASH_KEY: see "
                    "docs/security.md).",
                    file="MAILER_SECRET_KEY",
                )
        return self.secret_keys

    def require_hash_keys(self) -> tuple[str, ...]:
        """Every key a stored suppression hash may have been made with; the LAST one hashes new
        suppressions (so `address_hashes(email, keys)[0]` is the hash to store).

        The hashing key is the first of MAILER_HASH_KEY, or, when that is not set, the first
        (oldest) of MAILER_SECRET_KEY: adding a new signing key at the end never changes it, so
        one key that is kept keeps every suppression (issue 14, row 1). All keys of both are
        matched, so hashes made by an older release (with the newest signing key) still hold.
        """
        signing = self.require_secret_keys()
        hasher = self.hash_keys[0] if self.hash_keys else signing[0]
        others = [k for k in dict.fromkeys((*signing, *self.hash_keys)) if k != hasher]
        return (*others, hasher)


def hash_keys_from_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = environ.get("MAILER_HASH_KEY", "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def secret_keys_from_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = environ.get("MAILER_SECRET_KEY", "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def parse_settings(
    data: Mapping[str, Any],
    *,
    source: str,
    text: str = "",
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate a mapping (parsed TOML) into `Settings`; `text` lets errors name a line."""
    env = os.environ if environ is None else environ
    for reserved in (
        "secret_keys", "hash_keys", "smtp_password", "postmark_webhook_password",
        "mailgun_signing_key", "source",
    ):  # fmt: skip
        if reserved in data:
            raise ConfigError(
                "is not a setting; secrets come from the environment.", file=source, key=reserved
            )
    try:
        return Settings.model_validate(
            {
                **data,
                "secret_keys": secret_keys_from_env(env),
                "hash_keys": hash_keys_from_env(env),
                "smtp_password": env.get("MAILER_SMTP_PASSWORD", ""),
                "postmark_webhook_password": env.get("MAILER_POSTMARK_WEBHOOK_PASSWORD", ""),
                "mailgun_signing_key": env.get("MAILER_MAILGUN_SIGNING_KEY", ""),
                "source": source,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        line = _line_of_key(text, [str(p) for p in first["loc"]])
        message = _sentence(first["type"], first["msg"])
        raise ConfigError(message, file=source, key=key, line=line) from None


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the TOML file at `path`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "the configuration file does not exist; copy config.example.toml to start",
            file=str(path),
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read: {exc}", file=str(path)) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "Invalid value (at line 11, column 8)": the line goes where every other
        # error puts it, `file:line:`.
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", str(exc))
        reason = str(exc)[: where.start()] if where else str(exc)
        column = f" (column {where.group(2)})" if where else ""
        raise ConfigError(
            f"is not valid TOML: {reason}{column}.",
            file=str(path),
            line=int(where.group(1)) if where else None,
        ) from None
    return parse_settings(data, source=str(path), text=text, environ=environ)


def _sentence(kind: str, msg: str) -> str:
    if kind == "missing":
        return "is required but missing."
    if kind == "extra_forbidden":
        return "is not a known setting (see config.example.toml)."
    return msg[0].lower() + msg[1:] + ("" if msg.endswith(".") else ".")


def _line_of_key(text: str, loc: Sequence[str]) -> int | None:
    """Best-effort line number of a dotted key in TOML text (for the error message)."""
    if not text or not loc:
        return None
    table: list[str] = []
    section_line: int | None = None
    *parents, leaf = [p for p in loc if not p.isdigit()]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]", line.split("#", 1)[0].strip())
        if header:
            table = [p.strip().strip('"') for p in header.group(1).split(".")]
            if table == list(loc[: len(table)]) and len(table) == len(loc) and parents == []:
                return number
            if table == parents:
                section_line = number
            continue
        key = re.match(r'([A-Za-z0-9_"-]+)\s*=', line)
        if key and table == parents and key.group(1).strip('"') == leaf:
            return number
    return section_line
