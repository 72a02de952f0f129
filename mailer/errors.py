"""The one error tree of the mailer.

Every error the engine raises on purpose is a `MailerError`. Each child also inherits the
standard exception that fits, so callers that only know Python still catch it sensibly. The
command line maps this tree to exit codes in one place (`cli.exit_code_for`).

Messages are sentences for the person who fixes the input. They never contain a secret or a token.
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "ConfigError",
    "ExpiredToken",
    "ForgedToken",
    "HeaderInjectionError",
    "InputError",
    "MailerError",
    "NotFoundError",
    "SigningError",
    "SpamCheckError",
    "TemplateError",
    "TokenError",
    "TransportError",
]


class MailerError(Exception):
    """Root of every error the mailer raises on purpose."""


class InputError(MailerError, ValueError):
    """Bad input from a user: a file, a row, a field. Exit code 2."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        what = f'column "{field}": ' if field is not None and line is not None else ""
        super().__init__(f"{where}{what}{message}")


class ConfigError(InputError):
    """A missing, unknown or invalid setting; names the file and the key."""

    def __init__(
        self, message: str, *, file: str, key: str | None = None, line: int | None = None
    ) -> None:
        self.key = key
        prefix = f'key "{key}": ' if key else ""
        super().__init__(f"{prefix}{message}", file=file, line=line)


class TemplateError(InputError):
    """A template that cannot be used: missing, broken, or embedding images."""


class HeaderInjectionError(InputError):
    """A value meant for a mail header holds a line break (header injection)."""


class NotFoundError(MailerError, LookupError):
    """A named thing (campaign, contact, template) does not exist."""


class TokenError(MailerError, ValueError):
    """A link token that cannot be honoured."""


class ForgedToken(TokenError):
    """The token's signature does not match any of our keys: altered or made up."""


class ExpiredToken(TokenError):
    """The token is genuine but older than its time to live."""

    def __init__(self, message: str, *, signed_at: datetime | None) -> None:
        self.signed_at = signed_at
        super().__init__(message)


class TransportError(MailerError, ConnectionError):
    """The SMTP server could not be reached or dropped the connection."""


class SpamCheckError(MailerError, RuntimeError):
    """SpamAssassin is not installed, failed, or answered something we cannot read."""


class SigningError(MailerError, RuntimeError):
    """The DKIM signing process could not start, ended, or could not sign a message."""
