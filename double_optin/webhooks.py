"""Relay webhooks: Postmark, Mailgun and Amazon SES report bounces and complaints over HTTP.

Each call is authenticated the way its provider signs (a forged or unsigned call gets 401 and
changes nothing), turned into `Report`s and recorded by mailer.delivery.feedback, the one
place every channel records through. The provider's id of the event is remembered, so a
retried call is answered 200 and changes nothing twice.

- Postmark: HTTP basic auth on the webhook URL (Postmark has no signature); the password is
  MAILER_POSTMARK_WEBHOOK_PASSWORD.
- Mailgun: `signature` = HMAC-SHA256 of timestamp + token with the webhook signing key
  (MAILER_MAILGUN_SIGNING_KEY); timestamps more than 15 minutes off and tokens seen before
  are refused (replays).
- SES: SNS messages, signature verified (double_optin.sns), topic in
  `webhooks.ses_topic_arns`; a SubscriptionConfirmation is confirmed by fetching its
  SubscribeURL (an SNS https URL only).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from starlette.requests import Request

from double_optin.sns import Fetch, SnsRefused, SnsVerifier, fetch_https, is_sns_url
from mailer.config import Settings
from mailer.delivery.feedback import Report, ReportKind, apply_event, first_use
from mailer.delivery.transport import Outcome, Reply, classify
from mailer.errors import MailerError

__all__ = [
    "BadPayload",
    "Fetch",
    "Verified",
    "WebhookDesk",
    "WebhookRefused",
    "mailgun_call",
    "postmark_call",
    "ses_call",
]

MAILGUN_MAX_AGE_SECONDS = 15 * 60
_QUOTED_ID = re.compile(r"^Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


class WebhookRefused(MailerError, PermissionError):
    """Not from the provider (401): the sentence says why, never what the secret is."""


class BadPayload(MailerError, ValueError):
    """Authenticated (or not yet), but not a body the provider sends (400)."""


@dataclass(frozen=True, slots=True)
class Verified:
    """An authenticated call: what to record, under which event key."""

    event_key: tuple[str, str] | None
    reports: list[Report] = field(default_factory=list)
    replay_key: tuple[str, str] | None = None  # must never have been seen (Mailgun's token)
    confirm_url: str | None = None  # SNS subscription to confirm by a GET


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body is not a JSON object")
    return data


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _permanent(code: object, message: str) -> ReportKind:
    """A permanent failure read like an SMTP reply (transport.classify): a mailbox that does
    not exist is a hard bounce, a refusal of our content (5.7.x) only fails the delivery."""
    number = code if isinstance(code, int) and 500 <= code < 600 else 550
    outcome = classify(Reply(number, message))
    if outcome is Outcome.FAILED and not re.match(r"\s*5\.\d", message):
        return ReportKind.HARD_BOUNCE  # a permanent failure that says no more
    return ReportKind.HARD_BOUNCE if outcome is Outcome.HARD_BOUNCE else ReportKind.FAILED


# -- Postmark ------------------------------------------------------------------------------

_POSTMARK_KINDS = {
    "HardBounce": ReportKind.HARD_BOUNCE,
    "BadEmailAddress": ReportKind.HARD_BOUNCE,
    "SpamComplaint": ReportKind.COMPLAINT,
    "SoftBounce": ReportKind.SOFT_BOUNCE,
    "Transient": ReportKind.SOFT_BOUNCE,
    "DnsError": ReportKind.SOFT_BOUNCE,
    "Blocked": ReportKind.FAILED,  # the receiver blocked our message, not the person
}


def postmark_call(settings: Settings, authorization: str | None, body: bytes) -> Verified:
    password = settings.postmark_webhook_password
    if not password:
        raise WebhookRefused("the Postmark webhook is off: MAILER_POSTMARK_WEBHOOK_PASSWORD")
    scheme, _, encoded = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        given = ""
    if scheme.lower() != "basic" or not hmac.compare_digest(
        given.encode("utf-8"), password.encode("utf-8")
    ):
        raise WebhookRefused("wrong or missing basic-auth password")
    data = _json(body)
    record_type = _text(data.get("RecordType"))
    kind = ReportKind.COMPLAINT if record_type == "SpamComplaint" else None
    if record_type == "Bounce":
        kind = _POSTMARK_KINDS.get(_text(data.get("Type")))
    key = ("postmark", f"{record_type}:{data.get('ID')}:{data.get('MessageID')}")
    if kind is None:
        return Verified(key)  # deliveries, opens, clicks, auto-replies: nothing to record
    # Postmark's MessageID is its own; ours shows only in the bounce content, when included.
    quoted = _QUOTED_ID.findall(_text(data.get("Content")))
    detail = _text(data.get("Details")) or _text(data.get("Description"))
    note = f"{kind}: {data.get('Type') or record_type} (postmark) {detail}".strip()
    report = Report(kind, note, tuple(quoted), address=_text(data.get("Email")) or None)
    return Verified(key, [report])


# -- Mailgun -------------------------------------------------------------------------------


def mailgun_call(settings: Settings, body: bytes, now: datetime) -> Verified:
    key = settings.mailgun_signing_key
    if not key:
        raise WebhookRefused("the Mailgun webhook is off: MAILER_MAILGUN_SIGNING_KEY")
    data = _json(body)
    signed = data.get("signature")
    if not isinstance(signed, dict):
        raise WebhookRefused("the call is not signed")
    timestamp, token = _text(signed.get("timestamp")), _text(signed.get("token"))
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not token or not hmac.compare_digest(expected, _text(signed.get("signature"))):
        raise WebhookRefused("the signature does not verify")
    if not timestamp.isdigit() or abs(now.timestamp() - int(timestamp)) > MAILGUN_MAX_AGE_SECONDS:
        raise WebhookRefused("the signature is stale (timestamp more than 15 minutes off)")
    event = data.get("event-data")
    if not isinstance(event, dict):
        raise BadPayload("there is no event-data")
    name, severity = _text(event.get("event")), _text(event.get("severity"))
    replay = ("mailgun-token", token)
    event_key = ("mailgun", _text(event.get("id")) or token)
    status = event.get("delivery-status")
    status = status if isinstance(status, dict) else {}
    message = _text(status.get("message")) or _text(status.get("description"))
    if name == "complained":
        kind = ReportKind.COMPLAINT
    elif name == "failed" and severity == "permanent":
        kind = ReportKind.HARD_BOUNCE
        if _text(event.get("reason")) != "suppress-bounce":
            kind = _permanent(status.get("code"), message)
    elif name == "failed":
        kind = ReportKind.SOFT_BOUNCE
    else:
        return Verified(event_key, replay_key=replay)  # delivered, opened, ...: nothing to do
    headers = (event.get("message") or {}).get("headers") or {}
    ids = (_text(headers.get("message-id")),) if isinstance(headers, dict) else ()
    note = f"{kind}: {status.get('code') or name} (mailgun) {message}".strip()
    report = Report(kind, note, tuple(i for i in ids if i),
                    address=_text(event.get("recipient")) or None)  # fmt: skip
    return Verified(event_key, [report], replay_key=replay)


# -- Amazon SES through SNS ----------------------------------------------------------------


def _ses_message_ids(mail: dict[str, Any]) -> tuple[str, ...]:
    found = [_text((mail.get("commonHeaders") or {}).get("messageId"))]
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and _text(header.get("name")).lower() == "message-id":
            found.append(_text(header.get("value")))
    return tuple(dict.fromkeys(i for i in found if i))


def _ses_reports(notification: dict[str, Any]) -> list[Report]:
    kind = _text(notification.get("notificationType") or notification.get("eventType"))
    mail = notification.get("mail")
    ids = _ses_message_ids(mail) if isinstance(mail, dict) else ()
    reports = []
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        for person in bounce.get("bouncedRecipients") or []:
            status = _text(person.get("status"))
            text = f"{status} {_text(person.get('diagnosticCode'))}".strip()
            found = _permanent(550, text) if permanent else ReportKind.SOFT_BOUNCE
            note = f"{found}: {status or bounce.get('bounceSubType')} (ses) {text}".strip()
            reports.append(Report(found, note, ids, address=_text(person.get("emailAddress"))))
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        if complaint.get("complaintFeedbackType") == "not-spam":
            return []
        for person in complaint.get("complainedRecipients") or []:
            note = f"complaint: {complaint.get('complaintFeedbackType') or 'abuse'} (ses)"
            address = _text(person.get("emailAddress"))
            reports.append(Report(ReportKind.COMPLAINT, note, ids, address=address))
    return reports


def ses_call(settings: Settings, verifier: SnsVerifier, body: bytes) -> Verified:
    message = _json(body)  # SNS posts JSON as text/plain
    try:
        verifier.verify(message)
    except SnsRefused as exc:
        raise WebhookRefused(f"the SNS message {exc}") from None
    topic = _text(message.get("TopicArn"))
    if topic not in settings.webhooks.ses_topic_arns:
        raise WebhookRefused("the SNS topic is not in webhooks.ses_topic_arns")
    key = ("ses", _text(message.get("MessageId")))
    kind = message.get("Type")
    if kind == "SubscriptionConfirmation":
        url = _text(message.get("SubscribeURL"))
        if not is_sns_url(url):
            raise WebhookRefused("the SubscribeURL is not an SNS https URL")
        return Verified(None, confirm_url=url)
    if kind != "Notification":
        return Verified(None)  # UnsubscribeConfirmation: nothing to do
    try:
        notification = json.loads(_text(message.get("Message")))
    except ValueError:
        raise BadPayload("the SNS Message is not JSON") from None
    if not isinstance(notification, dict):
        raise BadPayload("the SNS Message is not a JSON object")
    return Verified(key, _ses_reports(notification))


# -- the desk the routes hand each call to ---------------------------------------------------

Clock = Callable[[], datetime]
Answer = tuple[int, dict[str, Any]]
_MAX_BODY = 256 * 1024  # a webhook body is a few KiB; SES with all headers well under this


class WebhookDesk:
    """Authenticates a call, records what it says, and words the JSON answer."""

    def __init__(
        self, engine: Engine, settings: Settings, clock: Clock, fetch: Fetch | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.fetch = fetch or fetch_https
        self.verifier = SnsVerifier(self.fetch)

    def _verify(self, provider: str, authorization: str | None, body: bytes) -> Verified:
        if provider == "postmark":
            return postmark_call(self.settings, authorization, body)
        if provider == "mailgun":
            return mailgun_call(self.settings, body, self.clock())
        return ses_call(self.settings, self.verifier, body)  # may fetch a certificate

    def _receive(self, provider: str, authorization: str | None, body: bytes) -> Answer:
        if len(body) > _MAX_BODY:
            return 413, {"error": "too_large", "detail": "The body is too large."}
        try:
            verified = self._verify(provider, authorization, body)
        except WebhookRefused as exc:
            return 401, {"error": "unauthorized", "detail": f"Refused: {exc}."}
        except BadPayload as exc:
            return 400, {"error": "bad_payload", "detail": f"Not understood: {exc}."}
        except (AttributeError, TypeError, ValueError, KeyError):
            # JSON of a shape no provider sends (a list where an object belongs): never a 500.
            return 400, {"error": "bad_payload", "detail": "Not understood: unexpected shape."}
        now = self.clock()
        replay = verified.replay_key
        if replay is not None and not first_use(self.engine, replay, now):
            return 401, {"error": "unauthorized", "detail": "Refused: the token was used before."}
        if verified.confirm_url is not None:
            try:
                self.fetch(verified.confirm_url)  # SNS: the GET confirms the subscription
            except (OSError, MailerError):
                return 502, {"error": "not_confirmed", "detail": "SNS did not answer; retry."}
            return 200, {"status": "subscribed"}
        event, reports = verified.event_key, verified.reports
        counted = apply_event(self.engine, self.settings, event, reports, now)
        if counted is None:
            return 200, {"status": "already_recorded"}
        return 200, {"status": "recorded", "counted": dict(sorted(Counter(counted).items()))}

    async def receive(self, provider: str, request: Request) -> Answer:
        """The answer to one call (status, JSON); database and fetches run in a thread."""
        body = await _capped_body(request)
        if body is None:
            return 413, {"error": "too_large", "detail": "The body is too large."}
        authorization = request.headers.get("authorization")
        return await asyncio.to_thread(self._receive, provider, authorization, body)


async def _capped_body(request: Request) -> bytes | None:
    """The body, read only up to `_MAX_BODY` (a huge one is refused, not held in memory)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
