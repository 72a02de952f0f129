"""Bounces and complaints from every channel, recorded one way, and the campaign guard.

The channels: the SMTP reply during the send (mailer.delivery.worker), the bounce mailbox
(DSNs, ARF feedback reports: mailer.delivery.bounces) and the relays' webhooks (Postmark,
Mailgun, Amazon SES: double_optin.webhooks). Each turns what it read into a `Report`;
`apply_report` is the one place that says what a hard bounce, a soft bounce, a complaint or a
refusal of our content does:

- hard bounce: the address we mailed is suppressed on every list (`hard_bounce`), the delivery
  failed;
- complaint (RFC 5965 abuse report, a relay's spam complaint): suppressed on every list
  (`complaint`); the delivery keeps its status (it was delivered) and is marked;
- soft bounce: noted on the delivery only;
- failed (a permanent refusal of our content, 5.7.x): the delivery failed, nobody suppressed.

A report that matches none of our deliveries is `unmatched` and changes nothing. After a hard
bounce or a complaint the campaign's guard is checked (mailer.core.guard).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, Engine, select, update

from mailer.config import GuardSettings, Settings
from mailer.core.guard import GuardLimits, Tripped, trip
from mailer.core.states import CampaignStatus, Feedback, SuppressionReason
from mailer.store.control import pause_campaign
from mailer.store.feedback import (
    FeedbackCounts,
    MatchedDelivery,
    feedback_counts,
    find_delivery,
    mark_delivery,
    remember_event,
    suppress_for,
)
from mailer.store.models import Campaign

__all__ = [
    "CampaignGuard",
    "Report",
    "ReportKind",
    "apply_event",
    "apply_report",
    "check_campaign",
    "first_use",
    "guard_limits",
    "record_feedback",
]

_campaign = Campaign.__table__  # type: ignore[attr-defined]


class ReportKind(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    FAILED = "failed"

    @property
    def feedback(self) -> Feedback | None:
        return None if self is ReportKind.FAILED else Feedback(self.value)


_SUPPRESSES = {
    ReportKind.HARD_BOUNCE: SuppressionReason.HARD_BOUNCE,
    ReportKind.COMPLAINT: SuppressionReason.COMPLAINT,
}


@dataclass(frozen=True, slots=True)
class Report:
    """What one bounce, complaint or webhook event says, before it is matched."""

    kind: ReportKind
    note: str  # stored as the delivery's last reply, e.g. "hard_bounce: 5.1.1 (postmark)"
    message_ids: tuple[str, ...] = ()  # the original Message-ID(s) it quotes
    delivery_id: int | None = None  # from a signed VERP return path
    # The recipient an authenticated relay names: matched to the latest delivery handed over to
    # that address when nothing else matches. Never set from the bounce mailbox, where anyone
    # can write anything.
    address: str | None = None


def guard_limits(guard: GuardSettings) -> GuardLimits:
    return GuardLimits(guard.max_hard_bounce_rate, guard.max_complaint_rate, guard.min_attempts)


def record_feedback(
    conn: Connection,
    keys: Sequence[str],
    found: MatchedDelivery,
    kind: ReportKind,
    *,
    note: str,
    now: datetime,
    suppress: bool = True,
) -> bool:
    """Record `kind` for the delivery `found`, for every channel. True when it changed
    anything: the same report twice changes nothing the second time."""
    changed = mark_delivery(conn, found, kind.feedback, note=note, now=now)
    reason = _SUPPRESSES.get(kind)
    if suppress and reason is not None and found.email is not None:
        changed = suppress_for(conn, keys, found.email, reason, now) or changed
    return changed


def apply_report(engine: Engine, settings: Settings, report: Report, now: datetime) -> str:
    """Match `report` to our delivery and record it, in one transaction; then check the guard.

    Returns what it counts as: the report's kind, or `unmatched` (no delivery of ours).
    """
    counted = apply_event(engine, settings, None, [report], now)
    return counted[0] if counted else "unmatched"


def first_use(engine: Engine, key: tuple[str, str], now: datetime) -> bool:
    """Remember a one-time value (Mailgun's signature token); False if it was used before."""
    with engine.begin() as conn:
        return remember_event(conn, *key, now)


def apply_event(
    engine: Engine,
    settings: Settings,
    event_key: tuple[str, str] | None,
    reports: Sequence[Report],
    now: datetime,
) -> list[str] | None:
    """Record the reports of one event in one transaction; what each counts as.

    With `event_key` (provider, the provider's id of the event) an event handled before
    changes nothing and gives None: a relay's retry is answered, not recorded twice.
    """
    keys = settings.require_hash_keys()
    counted: list[str] = []
    judge: set[int] = set()
    with engine.begin() as conn:
        if event_key is not None and not remember_event(conn, *event_key, now):
            return None
        for report in reports:
            found = find_delivery(
                conn,
                delivery_id=report.delivery_id,
                message_ids=report.message_ids,
                address=report.address,
            )
            if found is None:
                counted.append("unmatched")
                continue
            if record_feedback(conn, keys, found, report.kind, note=report.note, now=now):
                if report.kind in _SUPPRESSES:
                    judge.add(found.campaign_id)
            counted.append(str(report.kind))
    for campaign_id in sorted(judge):
        check_campaign(engine, campaign_id, guard_limits(settings.guard), now)
    return counted


def check_campaign(
    engine: Engine, campaign_id: int, limits: GuardLimits, now: datetime
) -> Tripped | None:
    """Pause the campaign if one of its rates is over its limit; what tripped, or None.

    Only a running campaign is paused (a finished one has nothing left to protect; a paused one
    keeps the reason it has).
    """
    counts = _read(engine, campaign_id)
    if counts is None:
        return None
    tripped = trip(counts.attempts, counts.hard_bounces, counts.complaints, limits)
    if tripped is None or not _pause(engine, campaign_id, tripped, now):
        return None
    return tripped


def _read(engine: Engine, campaign_id: int) -> FeedbackCounts | None:
    """The counts the guard judges (those after its last pause), None unless running."""
    c = _campaign.c
    with engine.connect() as conn:
        found = conn.execute(select(c.status, c.guard_judged_to).where(c.id == campaign_id)).first()
        if found is None or found[0] != CampaignStatus.RUNNING:
            return None
        return feedback_counts(conn, campaign_id, after_delivery_id=found[1])


def _pause(engine: Engine, campaign_id: int, tripped: Tripped, now: datetime) -> bool:
    if not pause_campaign(engine, campaign_id, tripped.reason, now):
        return False  # paused or stopped by someone else meanwhile
    with engine.begin() as conn:  # a resume starts the guard's judgment afresh from here
        last = feedback_counts(conn, campaign_id).last_attempted
        conn.execute(update(_campaign).where(_campaign.c.id == campaign_id)
                     .values(guard_judged_to=last))  # fmt: skip
    return True


@dataclass
class _Judged:
    """One campaign as a worker sees it: the database's counts at `read_at`, plus what this
    worker recorded since."""

    base: FeedbackCounts | None  # None: not running when read
    read_at: float
    attempts: int = 0
    hard_bounces: int = 0


class CampaignGuard:
    """The worker's side of the guard: marks SMTP-time hard bounces on their delivery and
    judges the campaign's rates after every outcome, from the database's counts (re-read
    every `refresh_seconds`: they include other workers and complaints that came in since)
    plus this worker's own outcomes since the read. Counting reads every row of a campaign,
    so it is not done per message."""

    def __init__(self, engine: Engine, settings: Settings, refresh_seconds: float = 5.0) -> None:
        self.engine = engine
        self.keys = settings.require_hash_keys()
        self.limits = guard_limits(settings.guard)
        self.refresh_seconds = refresh_seconds
        self.campaigns: dict[int, _Judged] = {}

    def needs_io(self, campaign_id: int, hard_bounce: bool) -> bool:
        """Whether `recorded` will touch the database (so a worker on a server database runs
        it in a thread): for a hard bounce, or when the counts are due to be read again."""
        judged = self.campaigns.get(campaign_id)
        return (
            hard_bounce
            or judged is None
            or (time.monotonic() - judged.read_at >= self.refresh_seconds)
        )

    def recorded(
        self, campaign_id: int, delivery_id: int, hard_bounce: bool, reply: str, now: datetime
    ) -> Tripped | None:
        """After an outcome was recorded: mark a hard bounce, then judge the rates."""
        if hard_bounce:
            self.mark_hard_bounce(delivery_id, reply, now)
        return self.judge(campaign_id, hard_bounce, now)

    def mark_hard_bounce(self, delivery_id: int, reply: str, now: datetime) -> None:
        """Note an SMTP-time hard bounce on its delivery (the ledger suppressed the address
        with the outcome, atomically; this adds what the guard and the report count)."""
        with self.engine.begin() as conn:
            found = find_delivery(conn, delivery_id=delivery_id)
            if found is not None:
                record_feedback(conn, self.keys, found, ReportKind.HARD_BOUNCE,
                                note=reply, now=now, suppress=False)  # fmt: skip

    def judge(self, campaign_id: int, hard_bounce: bool, now: datetime) -> Tripped | None:
        """After an outcome was recorded (and marked): pause the campaign if it is over a
        limit. No I/O except the read every `refresh_seconds` and a pause."""
        moment = time.monotonic()
        judged = self.campaigns.get(campaign_id)
        if judged is None or moment - judged.read_at >= self.refresh_seconds:
            # The read includes this outcome: counted there, not again below.
            judged = self.campaigns[campaign_id] = _Judged(_read(self.engine, campaign_id), moment)
        else:
            judged.attempts += 1
            judged.hard_bounces += hard_bounce
        if judged.base is None:
            return None
        base = judged.base
        tripped = trip(base.attempts + judged.attempts, base.hard_bounces + judged.hard_bounces,
                       base.complaints, self.limits)  # fmt: skip
        if tripped is None:
            return None
        self.campaigns.pop(campaign_id)  # read afresh next time (paused, or resumed)
        return tripped if _pause(self.engine, campaign_id, tripped, now) else None
