"""A spam filter's verdict on a campaign message: SpamAssassin, local rules only.

`spamassassin --local` runs no network tests (no DNS blocklists, no Razor/Pyzor), so the score
depends only on the message: headers, MIME structure, HTML, wording. That is the part we
control; reputation is not. The report parser is pure; `score_message` runs the program.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime

from mailer.config import Settings
from mailer.core.render import MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.delivery.dkimkeys import load_signing_keys
from mailer.errors import SpamCheckError
from mailer.store.campaign import content_of
from mailer.store.models import Campaign

__all__ = [
    "AIM",
    "RuleHit",
    "SpamVerdict",
    "parse_report",
    "render_sample",
    "score_message",
    "spamassassin_path",
]

AIM = 2.0  # our bar: well under SpamAssassin's default spam threshold of 5.0
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_SUMMARY = re.compile(rf"Content analysis details:\s+\({_NUMBER} points, {_NUMBER} required\)")
_RULE = re.compile(rf"^\s*{_NUMBER}\s+([A-Z0-9_]+)\s+(.*)$")
_SAMPLE = Recipient(0, "joel.muller@example.com", "Joël", "Müller", None)


@dataclass(frozen=True, slots=True)
class RuleHit:
    name: str
    points: float
    description: str


@dataclass(frozen=True, slots=True)
class SpamVerdict:
    score: float
    required: float
    rules: tuple[RuleHit, ...]

    @property
    def is_spam(self) -> bool:
        return self.score >= self.required


def spamassassin_path() -> str | None:
    return shutil.which("spamassassin")


def parse_report(report: str) -> SpamVerdict:
    """Score and rules from the "Content analysis details" table of `spamassassin -t`."""
    summary = _SUMMARY.search(report)
    if summary is None:
        raise SpamCheckError("SpamAssassin's report has no 'Content analysis details' table.")
    rules: list[RuleHit] = []
    in_table = False
    for line in report[summary.end() :].splitlines():
        if line.startswith("----"):
            in_table = True
            continue
        if not in_table:
            continue
        if match := _RULE.match(line):
            rules.append(RuleHit(match.group(2), float(match.group(1)), match.group(3).strip()))
        elif line.startswith(" ") and line.strip() and rules:  # a wrapped description
            last = rules[-1]
            rules[-1] = RuleHit(last.name, last.points, f"{last.description} {line.strip()}")
        elif not line.strip():
            break
    return SpamVerdict(float(summary.group(1)), float(summary.group(2)), tuple(rules))


def score_message(message: bytes, *, timeout: float = 120.0) -> SpamVerdict:
    """Run `spamassassin --local --test-mode` on one message."""
    program = spamassassin_path()
    if program is None:
        raise SpamCheckError(
            "SpamAssassin is not installed, so there is no score to show. Install it "
            "(Debian/Ubuntu: apt-get install spamassassin) and run the check again."
        )
    # --nocreate-prefs: a check must not write ~/.spamassassin/user_prefs as a side effect.
    command = [program, "--local", "--test-mode", "--nocreate-prefs"]
    try:
        done = subprocess.run(command, input=message, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SpamCheckError(f"SpamAssassin did not answer within {timeout:.0f} s.") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise SpamCheckError(f"SpamAssassin failed (exit {done.returncode}): {detail[0]}")
    return parse_report(done.stdout.decode("utf-8", "replace"))


def render_sample(settings: Settings, campaign: Campaign, now: datetime) -> bytes:
    """The campaign's message for a sample recipient with a Dutch name, as it would be sent."""
    factory = MessageFactory(
        make_environment(settings),
        settings,
        content_of(campaign),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
        load_signing_keys(settings),
    )
    return factory.render(_SAMPLE, basis="consent", now=now, delivery_ref="check").data
