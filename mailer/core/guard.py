"""The campaign guard's arithmetic (pure): is a campaign hurting the sender's reputation?

Mailbox providers judge a sender by its complaint rate (Gmail and Yahoo: keep it under 0.1%,
never reach 0.3%; Microsoft the same since May 2025) and by how often it mails addresses that do
not exist. A campaign to a stale list bounces on to the end unless something stops it: once it
has `min_attempts` attempts and either rate is over its limit, the worker pauses it
(mailer.store.control.pause_campaign) with the reason this module words.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GuardLimits", "Tripped", "trip"]


@dataclass(frozen=True, slots=True)
class GuardLimits:
    max_hard_bounce_rate: float = 0.05
    max_complaint_rate: float = 0.003
    min_attempts: int = 100


@dataclass(frozen=True, slots=True)
class Tripped:
    rate: str  # "hard_bounce_rate" or "complaint_rate"
    value: float
    limit: float
    count: int
    attempts: int

    @property
    def reason(self) -> str:
        """The sentence stored as the campaign's status reason and shown in its report."""
        kind = "hard bounce" if self.rate == "hard_bounce_rate" else "complaint"
        kind += "" if self.count == 1 else "s"
        return (
            f"guard: {self.rate} {self.value:.2%} is over the limit {self.limit:.2%} "
            f"({self.count} {kind} in {self.attempts} attempts)"
        )


def trip(attempts: int, hard_bounces: int, complaints: int, limits: GuardLimits) -> Tripped | None:
    """The rate that is over its limit (complaints first: they cost the most), or None.

    Nothing trips before `min_attempts`: two bounces in the first ten messages say nothing yet.
    """
    if attempts <= 0 or attempts < limits.min_attempts:
        return None
    complaint_rate = complaints / attempts
    if complaint_rate > limits.max_complaint_rate:
        return Tripped(
            "complaint_rate", complaint_rate, limits.max_complaint_rate, complaints, attempts
        )
    bounce_rate = hard_bounces / attempts
    if bounce_rate > limits.max_hard_bounce_rate:
        return Tripped(
            "hard_bounce_rate", bounce_rate, limits.max_hard_bounce_rate, hard_bounces, attempts
        )
    return None
