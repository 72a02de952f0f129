"""The sections of the settings file (`[sender]`, `[smtp]`, ...), each a validated model.

mailer.config reads the file into `Settings`, which holds one of each; the classes are
re-exported there, so callers import them from mailer.config.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BounceSettings",
    "DatabaseSettings",
    "DkimSettings",
    "GuardSettings",
    "ListSettings",
    "ListText",
    "PolicySettings",
    "SchedulerSettings",
    "SenderSettings",
    "SmtpSettings",
    "ThrottleSettings",
    "WebSettings",
    "WebhookSettings",
    "WorkerSettings",
]

_HEADER_UNSAFE = re.compile(r"[\r\n]")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_line_breaks(value: str) -> str:
    # Values end up in mail headers; a line break would let them add headers of their own.
    if _HEADER_UNSAFE.search(value):
        raise ValueError("must not contain a line break")
    return value


class SenderSettings(_Section):
    organization: str = Field(min_length=1)
    from_name: str = Field(min_length=1)
    from_address: str = Field(min_length=3)
    reply_to: str | None = None
    postal_address: str = Field(min_length=1)
    # The mailto: target of List-Unsubscribe; defaults to unsubscribe@<domain of from_address>.
    unsubscribe_address: str | None = None
    # GDPR art. 13: your privacy statement, linked on the signup page and in every footer.
    privacy_url: str | None = None
    # `mailer campaign test` sends only to these (your own inboxes): a test send needs no
    # consent, so it must never become a way to mail anyone else.
    test_addresses: tuple[str, ...] = ()
    # Gmail's feedback loop: with it every campaign message carries `Feedback-ID:
    # <campaign>:<list>:<basis>:<feedback_id>` (DKIM-signed), and Postmaster Tools shows the
    # complaint rate per campaign. Letters, digits, "-", "_" and "." only.
    feedback_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    _check = field_validator(
        "organization",
        "from_name",
        "from_address",
        "reply_to",
        "postal_address",
        "unsubscribe_address",
    )(lambda v: v if v is None else _no_line_breaks(v))

    @field_validator("privacy_url")
    @classmethod
    def _is_web_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s\"'<>]+", value):
            raise ValueError("must be a web address like https://bakkerij.example/privacy")
        return value

    @field_validator("test_addresses")
    @classmethod
    def _lowercase_test_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a.strip().lower() for a in value)

    @field_validator("from_address")
    @classmethod
    def _has_domain(cls, value: str) -> str:
        if "@" not in value or value.endswith("@"):
            raise ValueError("must be an e-mail address like nieuws@bakkerij.example")
        return value

    @property
    def domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1].lower()

    @property
    def unsubscribe_mailto(self) -> str:
        return self.unsubscribe_address or f"unsubscribe@{self.domain}"


class SmtpSettings(_Section):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str = ""
    max_connections: int = Field(default=4, ge=1, le=100)
    timeout_seconds: float = Field(default=30.0, gt=0)


class ThrottleSettings(_Section):
    # 0 switches a limit off.
    messages_per_second: float = Field(default=10.0, ge=0)
    per_domain_per_minute: float = Field(default=600.0, ge=0)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_seconds: float = Field(default=30.0, ge=0)
    # A run that has been paused this long because the server is down stops (exit 1); the
    # deliveries not yet tried stay queued for the next run.
    max_pause_seconds: float = Field(default=900.0, gt=0)


class WorkerSettings(_Section):
    # Deliveries a worker claims at a time (and holds in memory). Each claim is a transaction
    # with its own commit: at 2,000 messages a second, batches of 50 meant 80 claims a second
    # and cost a worker on PostgreSQL a fifth of its rate (benchmarks/workers_throughput.py).
    batch_size: int = Field(default=200, ge=1, le=1000)
    # A worker that stops renewing its claims for this long is taken to be gone: its claims
    # are then given to other workers. Keep it well above any clock difference between hosts.
    lease_seconds: float = Field(default=60.0, gt=0)
    # How often an idle worker looks for new work (and for claims of workers that died).
    poll_seconds: float = Field(default=2.0, gt=0)


class DatabaseSettings(_Section):
    url: str = "sqlite:///mailer.db"


class WebSettings(_Section):
    base_url: str = "http://localhost:8000"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    confirm_ttl_hours: float = Field(default=48.0, gt=0)
    # Against subscription bombing: signup attempts from one IP address per hour (0 = no limit).
    signups_per_ip_per_hour: int = Field(default=10, ge=0)

    @field_validator("base_url")
    @classmethod
    def _is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for local testing)")
        return value.rstrip("/")


class PolicySettings(_Section):
    jurisdiction: Literal["NL", "BE"] = "NL"
    soft_optin: bool = True
    role_addresses: bool = False
    offer_addresses: tuple[str, ...] = ()
    retention_days: int = Field(default=365, ge=1)
    # The delivery ledger is the proof of rule 8, but proof about people need not be kept
    # forever: after this many days a delivery row keeps campaign, basis and status only.
    delivery_retention_days: int = Field(default=730, ge=1)
    # Acknowledge a web unsubscribe with a short transactional mail. None follows the
    # jurisdiction: on in BE, where the acknowledgement is expected; off in NL, where the
    # person's "no more mail" is taken literally.
    unsubscribe_ack: bool | None = None

    @property
    def acknowledge_unsubscribe(self) -> bool:
        if self.unsubscribe_ack is None:
            return self.jurisdiction == "BE"
        return self.unsubscribe_ack

    @field_validator("offer_addresses")
    @classmethod
    def _lowercase(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a.strip().lower() for a in value)


class SchedulerSettings(_Section):
    timezone: str = "Europe/Amsterdam"  # cron expressions are in this local time
    misfire_grace_seconds: float = Field(default=3600.0, ge=0)
    # How often `mailer serve` reads the job store again: a schedule added, changed or removed
    # from another process takes effect within this time.
    poll_seconds: float = Field(default=2.0, gt=0, le=60)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'"{value}" is not a time zone like Europe/Amsterdam') from None
        return value


class BounceSettings(_Section):
    # Where bounces and mails to the List-Unsubscribe mailto address arrive: a Maildir folder,
    # or an IMAP mailbox over TLS (password from MAILER_IMAP_PASSWORD).
    maildir: str | None = None
    imap_host: str | None = None
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_username: str = ""
    imap_folder: str = "INBOX"
    # How often `mailer serve` processes the mailbox; 0 = only by `mailer bounces process`.
    interval_minutes: float = Field(default=15.0, ge=0)
    # VERP (set = on): the envelope sender of each campaign message becomes
    # bounces+<signed delivery ref>@<domain> for return_path = "bounces@<domain>", so a bounce
    # names the delivery it is about even when it quotes nothing of the message.
    return_path: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+$")


class WebhookSettings(_Section):
    # Amazon SES via SNS: only notifications of these topics are accepted (any AWS account can
    # point a topic at a public URL; the signature proves only that SNS sent it).
    ses_topic_arns: tuple[str, ...] = ()
    # SNS signing certificates are fetched only from https://sns.<region>.amazonaws.com/...
    # (`.amazonaws.com.cn` in China); cached in memory by URL.


class GuardSettings(_Section):
    # A campaign pauses itself once it has `min_attempts` attempts and more than this share of
    # them hard-bounced or drew a complaint (mailer.core.guard); `campaign resume` goes on.
    max_hard_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    max_complaint_rate: float = Field(default=0.003, gt=0, le=1)
    min_attempts: int = Field(default=100, ge=1)


class ListText(_Section):
    title: str = Field(min_length=1)
    wording: str = Field(min_length=1)


class ListSettings(_Section):
    title: str = Field(min_length=1)
    wording: str = Field(min_length=1)
    # Per locale ("en"): the title and wording a page in that language shows, and the consent
    # then records (rule 7: the exact wording shown).
    translations: dict[str, ListText] = Field(default_factory=dict)

    @field_validator("translations")
    @classmethod
    def _locales(cls, value: dict[str, ListText]) -> dict[str, ListText]:
        for locale in value:
            if not re.fullmatch(r"[a-z]{2}(-[A-Z]{2})?", locale):
                raise ValueError(f'"{locale}" is not a locale like "en" or "nl"')
        return value

    def text_for(self, locale: str | None) -> ListText:
        """The title and wording in `locale`, or the list's own text without a translation."""
        found = self.translations.get(locale or "")
        return found or ListText(title=self.title, wording=self.wording)

    # A welcome mail when a signup is confirmed: true = always, false = never, unset = when a
    # template mail/welcome.<list>.<locale>.txt exists (templates_dir or bundled).
    welcome: bool | None = None


class DkimSettings(_Section):
    # Present = every campaign message is DKIM-signed (RFC 6376; ed25519: RFC 8463).
    selector: str
    domain: str
    private_key_file: str = Field(min_length=1)
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    # RFC 8463 §6: also sign with a second key (usually ed25519 beside rsa), under its own
    # selector: receivers that know ed25519 check that one, the others the first.
    second_selector: str | None = None
    second_private_key_file: str | None = Field(default=None, min_length=1)
    second_algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "ed25519-sha256"

    @field_validator("selector", "domain", "second_selector")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        # Both end up in a DNS name (selector._domainkey.domain) and in the signature header.
        if value is None:
            return None
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", value):
            raise ValueError("must be a DNS name: letters, digits, '-', '_' and dots")
        return value.lower()
