"""SMTP: classifying replies (pure) and one reconnecting connection per sending task.

Every message goes to exactly one recipient (rule 4), so a reply belongs to one person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib

from mailer.config import SmtpSettings
from mailer.core.addresses import wire_address
from mailer.delivery.pipelining import PipelinedSession, wire_body

__all__ = ["Outcome", "Reply", "SmtpConnection", "classify"]


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # 4xx or a connection problem: try again later
    HARD_BOUNCE = "hard_bounce"  # the mailbox does not exist or is disabled: suppress it
    FAILED = "failed"  # any other permanent refusal


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}".strip()


# RFC 3463 enhanced status codes: 5.1.x addressing (no such user, bad domain), 5.2.1 disabled.
# RFC 2034 §4: the enhanced code starts the reply text; anchored, so an IP address further on
# ("client 5.1.83.20 is listed") is never read as one.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_NO_SUCH_USER = re.compile(r"no such user|user unknown|unknown user|does not exist", re.I)


def classify(reply: Reply) -> Outcome:
    """What a reply means for the delivery: sent, try again, hard bounce or failed."""
    if 200 <= reply.code < 300:
        return Outcome.SENT
    if 400 <= reply.code < 500 or reply.code <= 0:
        return Outcome.RETRY
    enhanced = _ENHANCED.match(reply.message)
    if enhanced and enhanced.group(1) == "5":
        subject, detail = enhanced.group(2), enhanced.group(3)
        if subject == "1" or (subject, detail) == ("2", "1"):
            return Outcome.HARD_BOUNCE
        return Outcome.FAILED
    if reply.code == 550 and _NO_SUCH_USER.search(reply.message):
        return Outcome.HARD_BOUNCE
    return Outcome.FAILED


# Code 0 marks a reply we made up for a connection problem (no server reply exists).
CONNECTION_LOST = 0
# Made up too: the server cannot take an address with a non-ASCII local part. RFC 3463 5.6.7
# "non-ASCII addresses not permitted": a permanent failure, not a bounce of the address.
NO_SMTPUTF8 = 553
_NO_SMTPUTF8_REASON = (
    "5.6.7 not sent: the address has a non-ASCII part before the @, and the SMTP server does "
    "not offer SMTPUTF8 (RFC 6531), which such an address needs"
)


async def _one_recipient_transaction(
    smtp: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes
) -> Reply:
    """MAIL, RCPT, DATA for one validated ASCII recipient.

    The addresses were validated and normalised at import, so the per-call address parsing of
    `sendmail` (a measurable share of a send) is skipped.
    """
    for verb, argument, accepted in (
        (b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", (250,)),
        (b"RCPT", b"TO:<" + recipient.encode("ascii") + b">", (250, 251)),
    ):
        response = await smtp.execute_command(verb, argument)
        if response.code not in accepted:
            if response.code != 421:
                await smtp.rset()
            raise aiosmtplib.SMTPResponseException(response.code, response.message)
    response = await smtp.data(message)
    return Reply(response.code, response.message)


class SmtpConnection:
    """One SMTP session that (re)connects on demand; `send` never raises for a server's answer.

    A server that offers PIPELINING (RFC 2920; Postfix, Exim and the big providers do) gets
    each message in two round trips (mailer.delivery.pipelining); one that does not, in four
    through aiosmtplib.
    """

    def __init__(self, settings: SmtpSettings, password: str = "") -> None:
        self._settings = settings
        self._password = password
        self._smtp: aiosmtplib.SMTP | None = None
        self._pipe: PipelinedSession | None = None

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username or None,
            password=self._password or None,
            timeout=s.timeout_seconds,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
        )

    def _is_open(self) -> bool:
        if self._pipe is not None:
            return self._pipe.open
        return self._smtp is not None and self._smtp.is_connected

    async def _connected(self) -> aiosmtplib.SMTP:
        # No sleeping here: a failed connection defers its delivery with exponential backoff,
        # and a server that stays down opens the run's circuit breaker, whose probes back off.
        if self._smtp is None or not self._is_open():
            await self.close()
            self._smtp = self._client()
            await self._smtp.connect()
            if self._smtp.is_ehlo_or_helo_needed:
                await self._smtp.ehlo()
            if self._smtp.supports_extension("pipelining") and self._smtp.transport is not None:
                # aiosmtplib did TLS, EHLO and AUTH; the session is ours from here on.
                self._pipe = PipelinedSession(self._smtp.transport, self._settings.timeout_seconds)
        return self._smtp

    async def probe(self) -> bool:
        """Is the server answering? A connection and a NOOP; no message is sent."""
        try:
            smtp = await self._connected()
            if self._pipe is not None:
                return (await self._pipe.command(b"NOOP")).code == 250
            return (await smtp.noop()).code == 250
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()
            return False

    async def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        sender, recipient = wire_address(sender), wire_address(recipient)
        try:
            smtp = await self._connected()
            ascii_only = sender.isascii() and recipient.isascii()
            # A non-ASCII local part needs SMTPUTF8 (RFC 6531) end to end; without it the
            # delivery fails with this reason instead of a crash (issue 14, row 8).
            if not ascii_only and not smtp.supports_extension("smtputf8"):
                return Reply(NO_SMTPUTF8, _NO_SMTPUTF8_REASON)
            if self._pipe is not None:
                code, text = await self._pipe.transaction(
                    sender.encode("utf-8"), recipient.encode("utf-8"), wire_body(message),
                    b"" if ascii_only else b" SMTPUTF8",
                )  # fmt: skip
                if code == 421 or not self._pipe.open:
                    await self.close()  # RFC 5321 §3.8: 421 means the server closes the channel
                return Reply(code, text)
            if ascii_only:
                return await _one_recipient_transaction(smtp, sender, recipient, message)
            _refused, response = await smtp.sendmail(
                sender, [recipient], message, mail_options=["SMTPUTF8"]
            )
            return Reply(250, response)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return Reply(first.code, first.message)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:
                await self.close()  # RFC 5321 §3.8: 421 means the server closes the channel
            return Reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()
            return Reply(CONNECTION_LOST, f"connection problem: {exc}")

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            await pipe.quit()  # aiosmtplib's protocol no longer holds the transport
            return
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()
