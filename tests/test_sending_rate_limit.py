"""The throttle during a real run: the global rate bounds the run time and every one-second
window.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine

from mailer.delivery.sink import SmtpSink
from tests.conftest import make_settings
from tests.factories import add_contact, new_campaign
from tests.sending_support import NOW, run, subscribed

# -- rule 4: the throttle ---------------------------------------------------------------------


def test_the_global_rate_bounds_the_run_time_and_every_one_second_window(
    db_url: str, engine: Engine, sink: SmtpSink
) -> None:
    settings = make_settings(
        db_url, smtp={"port": sink.port, "max_connections": 3},
        throttle={"messages_per_second": 20, "per_domain_per_minute": 0},
    )  # fmt: skip
    for n in range(11):
        add_contact(engine, settings, f"p{n}@d{n % 3}.example", at=NOW, consents=subscribed())
    campaign = new_campaign(engine, settings, "rate", at=NOW)
    start = time.monotonic()
    run(engine, settings, campaign)
    elapsed = time.monotonic() - start
    times = sorted(m.received_at for m in sink.messages)
    assert len(times) == 11
    assert elapsed >= (11 - 1) / 20  # 11 messages at 20/s: ten gaps of 50 ms
    for first in times:
        assert sum(1 for t in times if first <= t < first + 1.0) <= 20 + 1
