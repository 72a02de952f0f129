"""The states the engine records: consent events, suppression reasons, campaign and delivery
status. Plain enums, so the pure policy can name them and the tables can store them."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CampaignStatus",
    "ConsentEvent",
    "ConsentOrigin",
    "DeliveryStatus",
    "Feedback",
    "SuppressionReason",
]


class ConsentEvent(StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    WITHDRAWN = "withdrawn"


class ConsentOrigin(StrEnum):
    # Only a confirmation by the person themselves (our confirm page) can lift a suppression.
    WEB = "web"
    IMPORT = "import"


class SuppressionReason(StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    OBJECTED = "objected"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    ERASED = "erased"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    # Stopped by `mailer campaign pause` or by the campaign's guard: no worker starts another of
    # its messages; `mailer campaign resume` makes it running again.
    PAUSED = "paused"
    # Stopped for good by `mailer campaign cancel`: its unsent rows are cancelled.
    CANCELLED = "cancelled"
    DONE = "done"
    # The retention purge took the people out of its ledger: it can no longer tell who was
    # mailed, so it is never sent again.
    ARCHIVED = "archived"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    # Taken by a worker (lease_owner) but not yet handed to the server: safe to give back.
    CLAIMED = "claimed"
    # Being handed to the server; if the worker dies now the row becomes `unknown`.
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPPRESSED = "suppressed"
    # Was being handed to the server when the run stopped: may or may not have arrived.
    UNKNOWN = "unknown"
    # Never sent: its campaign was cancelled before this row's turn.
    CANCELLED = "cancelled"


class Feedback(StrEnum):
    """What a receiver said about a message after it was handed over (stored on the delivery).

    Ranked: a complaint outweighs a hard bounce, which outweighs a soft bounce; a delivery keeps
    the weightiest it was told."""

    SOFT_BOUNCE = "soft_bounce"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"

    @property
    def rank(self) -> int:
        return list(Feedback).index(self)
