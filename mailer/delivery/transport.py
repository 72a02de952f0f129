"""SMTP: classifying replies (pure) and one reconnecting connection per sending task.

Every message goes to exactly one recipient (rule 4), so a reply belongs to one person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib

from mailer.config import SmtpSettings

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
# Made up too, as RFC 6531 §3.7.4.2 has a server say it: this relay cannot take the address.
_NO_SMTPUTF8 = "5.6.7 the server does not offer SMTPUTF8, needed for this address (RFC 6531)"


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
    """One SMTP session that (re)connects on demand; `send` never raises for a server's answer."""

    def __init__(self, settings: SmtpSettings, password: str = "") -> None:
        self._settings = settings
        self._password = password
        self._smtp: aiosmtplib.SMTP | None = None

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

    async def _connected(self) -> aiosmtplib.SMTP:
        # No sleeping here: a failed connection defers its delivery with exponential backoff,
        # and a server that stays down opens the run's circuit breaker, whose probes back off.
        if self._smtp is None or not self._smtp.is_connected:
            self._smtp = self._client()
            await self._smtp.connect()
            if self._smtp.is_ehlo_or_helo_needed:
                await self._smtp.ehlo()
        return self._smtp

    async def probe(self) -> bool:
        """Is the server answering? A connection and a NOOP; no message is sent."""
        try:
            smtp = await self._connected()
            return (await smtp.noop()).code == 250
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()
            return False

    async def send(self, sender: str, recipient: str, message: bytes) -> Reply:
        try:
            smtp = await self._connected()
            if sender.isascii() and recipient.isascii():
                return await _one_recipient_transaction(smtp, sender, recipient, message)
            # Internationalised addresses need SMTPUTF8 (RFC 6531); sendmail only asks for it
            # when told to, and without it refuses the address (UnicodeEncodeError).
            if not smtp.supports_extension("smtputf8"):
                return Reply(553, _NO_SMTPUTF8)
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
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()
