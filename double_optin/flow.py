"""The double opt-in state machine: signup, confirm, renew, unsubscribe. No HTTP in here.

Per list, the latest consent event is the state: `requested` (pending), `confirmed`, `withdrawn`.

- signup: requested (+ a confirmation mail, rate-limited against subscription bombing:
  double_optin.limits);
- confirm: requested -> confirmed; confirmed stays confirmed (twice is harmless); withdrawn after
  the request makes the old link stale (an unsubscribe is never undone by an old mail);
- unsubscribe: -> withdrawn, plus a suppression, in one transaction, so a running campaign skips
  the person from the next message on (sending re-checks suppression before each send):
  double_optin.unsubscribe.

Every answer is a value (an outcome with a status: double_optin.outcomes, re-exported here);
the web layer only renders it. The database work runs in a worker thread so the event loop
keeps serving while SQLite waits; every write goes through one GroupWriter (double_optin.writer),
which commits the writes of concurrent requests together and answers each after its commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection as DbConnection
from sqlalchemy import Engine

from double_optin.limits import MAX_MAILS_PER_ADDRESS_PER_DAY, RateLimited, SignupLimits
from double_optin.mail import ConfirmationMail, build_confirmation, deliver
from double_optin.outcomes import (
    ALL_LISTS,
    Acknowledgement,
    ConfirmOutcome,
    Seen,
    SignupOutcome,
    SignupStatus,
    TokenStatus,
    UnsubscribeOutcome,
    Welcome,
)
from double_optin.unsubscribe import ALL_TITLE, Unsubscribe, record_unsubscribe
from double_optin.writer import GroupWriter
from mailer.config import Settings
from mailer.core.addresses import normalise_address
from mailer.core.render import make_environment
from mailer.core.tokens import TokenSigner
from mailer.delivery.acknowledge import send_unsubscribe_ack
from mailer.delivery.dkimkeys import load_signing_keys
from mailer.delivery.sending import Connection
from mailer.delivery.welcome import build_welcome, send_welcome, welcome_wanted
from mailer.errors import ExpiredToken, ForgedToken
from mailer.store import signups as store
from mailer.store.models import ConsentEvent

__all__ = [
    "ALL_LISTS",
    "Acknowledgement",
    "MAX_MAILS_PER_ADDRESS_PER_DAY",
    "ConfirmOutcome",
    "Flow",
    "Seen",
    "SignupOutcome",
    "SignupStatus",
    "TokenStatus",
    "UnsubscribeOutcome",
    "Welcome",
]

_PENDING = (ConsentEvent.REQUESTED,)

T = TypeVar("T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Flow:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = _utc_now,
        connect: Callable[[], Connection] | None = None,
    ) -> None:
        self.engine = engine
        self._writer = GroupWriter(engine)
        self.settings = settings
        self.clock = clock
        self._connect = connect
        self._keys = settings.require_secret_keys()
        self._signer = TokenSigner(self._keys)
        self._limits = SignupLimits(self._keys, settings.web.signups_per_ip_per_hour)
        self._hash_keys = settings.require_hash_keys()  # suppressions: never rotated away
        self._env = make_environment(settings)
        # Transactional mail is signed like campaign mail; the keys are read and checked once,
        # so `serve` fails at start on a key that does not load, not at the first signup.
        self._dkim = load_signing_keys(settings)
        self._ttl = timedelta(hours=settings.web.confirm_ttl_hours)

    # -- signup ------------------------------------------------------------------------------

    async def signup(
        self,
        raw_email: str,
        list_names: Sequence[str],
        *,
        honeypot: str,
        locale: str,
        source: str,
        seen: Seen,
    ) -> SignupOutcome:
        chosen = tuple(dict.fromkeys(list_names))  # de-duplicated, in form order
        if honeypot.strip():
            # A person never sees the field; a bot fills it. Same answer, nothing stored.
            return SignupOutcome(SignupStatus.ACCEPTED)
        try:
            email = normalise_address(raw_email)
        except ValueError as exc:
            return SignupOutcome(SignupStatus.INVALID, "invalid_address", str(exc))
        if not chosen:
            return SignupOutcome(SignupStatus.INVALID, "no_list")
        if any(name not in self.settings.lists for name in chosen):
            return SignupOutcome(SignupStatus.INVALID, "unknown_list")
        # The wording of the page's language: exactly the text the person was shown.
        wordings = {name: self.settings.lists[name].text_for(locale).wording for name in chosen}
        now = self.clock()
        evidence = store.Evidence(source, seen.ip, seen.user_agent, now)
        try:
            mail = await self._writer.run(
                lambda conn: self._record_signup(conn, email, wordings, locale, evidence)
            )
        except RateLimited:
            return SignupOutcome(SignupStatus.RATE_LIMITED)
        return SignupOutcome(SignupStatus.ACCEPTED, mail=mail)

    def _record_signup(
        self,
        conn: DbConnection,
        email: str,
        wordings: dict[str, str],
        locale: str,
        evidence: store.Evidence,
    ) -> ConfirmationMail | None:
        # The batch holds the write lock (SQLite) or the advisory locks (PostgreSQL), so the
        # counts below cannot race with a concurrent signup (see store.py).
        self._limits.check_ip(conn, evidence)
        contact = store.ensure_contact(conn, email, locale, evidence.at)
        store.add_events(conn, contact.id, wordings, ConsentEvent.REQUESTED, evidence)
        return self._mail_if_allowed(conn, contact, tuple(wordings), evidence.at, locale)

    def _mail_if_allowed(
        self,
        conn: DbConnection,
        contact: store.ContactRow,
        list_names: tuple[str, ...],
        now: datetime,
        locale: str,
    ) -> ConfirmationMail | None:
        if not self._limits.allow_mail(conn, contact.email, now):
            return None
        latest = store.latest_events(conn, contact.id)
        token = self._signer.confirm_token(contact.id, list_names, now=now, email=contact.email)
        return ConfirmationMail(
            email=contact.email,
            locale=locale,
            confirm_url=f"{self.settings.web.base_url}/confirm/{token}",
            list_names=list_names,
            wordings=tuple(latest[n].wording for n in list_names),
            expires_at=now + self._ttl,
        )

    async def send(self, mail: ConfirmationMail) -> bool:
        """Render and send the confirmation mail (the web layer calls this after answering)."""
        data = build_confirmation(self._env, self.settings, mail, self.clock(), self._dkim)
        return await deliver(data, mail.email, self.settings, self._connect)

    # -- confirm -----------------------------------------------------------------------------

    async def confirm_view(self, token: str) -> ConfirmOutcome:
        """What GET shows. Changes nothing: mail link scanners fetch every link they see."""
        return await self._confirm(token, None)

    async def confirm(self, token: str, seen: Seen) -> ConfirmOutcome:
        return await self._confirm(token, seen)

    async def _confirm(self, token: str, seen: Seen | None) -> ConfirmOutcome:
        now = self.clock()
        try:
            claim = self._signer.read_confirm(
                token, max_age_seconds=self._ttl.total_seconds(), now=now
            )
        except ExpiredToken as exc:
            return ConfirmOutcome(TokenStatus.EXPIRED, signed_at=exc.signed_at)
        except ForgedToken:
            return ConfirmOutcome(TokenStatus.FORGED)
        evidence = None
        if seen is not None:
            source = f"{self.settings.web.base_url}/confirm"
            evidence = store.Evidence(source, seen.ip, seen.user_agent, now)

        def job(conn: DbConnection) -> ConfirmOutcome:
            return self._record_confirm(
                conn, claim.contact_id, claim.list_names, evidence,
                made_for=lambda email: TokenSigner.made_for(claim, email),
            )  # fmt: skip

        return await (self._read(job) if evidence is None else self._writer.run(job))

    async def _read(self, job: Callable[[DbConnection], T]) -> T:
        """A view that changes nothing: its own connection, beside the writer's batches."""

        def read() -> T:
            with self.engine.connect() as conn:
                return job(conn)

        return await asyncio.to_thread(read)

    def _record_confirm(
        self,
        conn: DbConnection,
        contact_id: int,
        list_names: tuple[str, ...],
        evidence: store.Evidence | None,
        *,
        made_for: Callable[[str], bool] = lambda _email: True,
    ) -> ConfirmOutcome:
        contact = store.contact_by_id(conn, contact_id)
        # Erased since the mail was sent, or (an old database) the id is someone else's now.
        if contact is None or not made_for(contact.email):
            return ConfirmOutcome(TokenStatus.STALE)
        latest = store.latest_events(conn, contact_id)
        pending = {
            n: latest[n].wording for n in list_names if n in latest and latest[n].event in _PENDING
        }
        done = [n for n in list_names if n in latest and latest[n].event is ConsentEvent.CONFIRMED]
        if not pending and not done:
            # Withdrawn after this link was mailed, or never requested: an old mail must
            # not undo an unsubscribe.
            return ConfirmOutcome(TokenStatus.STALE, locale=contact.locale)
        if evidence is None:
            status = TokenStatus.READY if pending else TokenStatus.CONFIRMED
            return ConfirmOutcome(status, tuple(pending) + tuple(done), contact.locale)
        # The wording stored with the confirmation is the one the person ticked.
        store.add_events(conn, contact_id, pending, ConsentEvent.CONFIRMED, evidence)
        return ConfirmOutcome(
            TokenStatus.CONFIRMED,
            tuple(pending) + tuple(done),
            contact.locale,
            welcomes=self._welcomes(contact_id, contact.email, contact.locale, pending),
        )

    def _welcomes(
        self, contact_id: int, email: str, locale: str | None, confirmed: Iterable[str]
    ) -> tuple[Welcome, ...]:
        """Welcome mails for the lists confirmed just now (never for ones confirmed before)."""
        chosen = locale if locale in ALL_TITLE else self.settings.locale
        base = self.settings.web.base_url
        return tuple(
            Welcome(email, name, chosen,
                    f"{base}/unsubscribe/{self._signer.unsubscribe_token(contact_id, name)}")
            for name in confirmed
            if welcome_wanted(self._env, self.settings, name, chosen)
        )  # fmt: skip

    async def welcome(self, welcome: Welcome) -> bool:
        """Send a welcome mail (the web layer calls this after answering)."""
        data = build_welcome(
            self._env, self.settings, email=welcome.email, list_name=welcome.list_name,
            unsubscribe_url=welcome.unsubscribe_url, locale=welcome.locale, now=self.clock(),
            dkim=self._dkim,
        )  # fmt: skip
        return await send_welcome(data, welcome.email, self.settings, connect=self._connect)

    async def renew(self, token: str, seen: Seen) -> ConfirmOutcome:
        """A new confirmation mail for an expired link, under the same anti-bombing limits."""
        # An expired link may still ask for a new mail, a forged one may not: the signature is
        # checked, the age is not.
        try:
            claim = self._signer.read_confirm(token, max_age_seconds=None)
        except ForgedToken:
            return ConfirmOutcome(TokenStatus.FORGED)
        evidence = store.Evidence("", seen.ip, seen.user_agent, self.clock())
        try:
            return await self._writer.run(
                lambda conn: self._record_renew(
                    conn, claim.contact_id, claim.list_names, evidence,
                    made_for=lambda email: TokenSigner.made_for(claim, email),
                )
            )  # fmt: skip
        except RateLimited:
            return ConfirmOutcome(TokenStatus.RENEWED)

    def _record_renew(
        self,
        conn: DbConnection,
        contact_id: int,
        list_names: tuple[str, ...],
        evidence: store.Evidence,
        *,
        made_for: Callable[[str], bool] = lambda _email: True,
    ) -> ConfirmOutcome:
        self._limits.check_ip(conn, evidence)
        contact = store.contact_by_id(conn, contact_id)
        if contact is None or not made_for(contact.email):
            return ConfirmOutcome(TokenStatus.STALE)
        latest = store.latest_events(conn, contact_id)
        pending = tuple(n for n in list_names if n in latest and latest[n].event in _PENDING)
        if not pending:
            return ConfirmOutcome(TokenStatus.STALE, locale=contact.locale)
        locale = contact.locale or self.settings.locale
        mail = self._mail_if_allowed(conn, contact, pending, evidence.at, locale)
        return ConfirmOutcome(TokenStatus.RENEWED, pending, contact.locale, mail=mail)

    # -- unsubscribe -------------------------------------------------------------------------

    async def unsubscribe_view(self, token: str) -> UnsubscribeOutcome:
        return await self._unsubscribe(token, None, "", None)

    async def unsubscribe(
        self, token: str, *, scope: str | None, how: str, seen: Seen
    ) -> UnsubscribeOutcome:
        """Withdraw consent and suppress at once: `scope` a list name, ALL_LISTS, or None for
        the list of the mail the link came from. `how` is stored as the withdrawal's wording."""
        return await self._unsubscribe(token, scope, how, seen)

    async def _unsubscribe(
        self, token: str, scope: str | None, how: str, seen: Seen | None
    ) -> UnsubscribeOutcome:
        try:
            claim = self._signer.read_unsubscribe(token)
        except ForgedToken:
            return UnsubscribeOutcome(TokenStatus.FORGED)
        evidence = None
        if seen is not None:
            source = f"{self.settings.web.base_url}/unsubscribe"
            evidence = store.Evidence(source, seen.ip, seen.user_agent, self.clock())

        asked = Unsubscribe(
            claim.contact_id, claim.list_name, scope, how, evidence, claim.basis,
            made_for=lambda email: TokenSigner.made_for(claim, email),
        )  # fmt: skip

        def job(conn: DbConnection) -> UnsubscribeOutcome:
            return record_unsubscribe(conn, self.settings, self._hash_keys, asked)

        # The view reads beside the writer; the POST waits for its batch's commit.
        return await (self._read(job) if evidence is None else self._writer.run(job))

    async def acknowledge(self, ack: Acknowledgement) -> bool:
        """Send the unsubscribe acknowledgement (the web layer calls this after answering)."""
        return await send_unsubscribe_ack(
            self.settings, ack.email, ack.list_title, locale=ack.locale, now=self.clock(),
            connect=self._connect, dkim=self._dkim,
        )  # fmt: skip
