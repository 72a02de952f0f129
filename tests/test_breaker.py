"""The circuit breaker's arithmetic: pause when most recent sends fail, probe, resume."""

from __future__ import annotations

from mailer.core.breaker import Breaker, BreakerState


def test_breaker_stays_closed_while_most_sends_succeed() -> None:
    breaker = Breaker(window=10, threshold=0.8)
    for n in range(50):
        breaker.record(failed=n % 3 == 0, now=float(n))
    assert breaker.state is BreakerState.CLOSED
    assert breaker.wait(50.0) == 0.0


def test_breaker_opens_when_most_of_the_window_fails_and_waits_before_probing() -> None:
    breaker = Breaker(window=10, threshold=0.8, first_delay=2.0)
    for _ in range(10):
        breaker.record(failed=True, now=100.0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.wait(100.5) == 1.5
    assert breaker.wait(102.0) is None  # this caller probes
    assert breaker.state is BreakerState.PROBING
    assert breaker.wait(102.0) == 0.1  # the others wait for the probe


def test_failed_probes_double_the_delay_up_to_the_cap_and_a_good_probe_resumes() -> None:
    breaker = Breaker(window=4, threshold=1.0, first_delay=1.0, max_delay=4.0)
    for _ in range(4):
        breaker.record(failed=True, now=0.0)
    now, delays = 1.0, []
    for _ in range(4):
        assert breaker.wait(now) is None
        breaker.probed(False, now)
        delay = breaker.wait(now)
        assert delay is not None
        delays.append(delay)
        now += delay
    assert delays == [2.0, 4.0, 4.0, 4.0]
    assert breaker.wait(now) is None
    breaker.probed(True, now)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.wait(now) == 0.0


def test_outcomes_of_sends_in_flight_while_open_are_ignored() -> None:
    breaker = Breaker(window=4, threshold=1.0)
    for _ in range(4):
        breaker.record(failed=True, now=0.0)
    breaker.record(failed=False, now=0.1)
    assert breaker.state is BreakerState.OPEN
