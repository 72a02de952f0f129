"""`mailer serve`: the long-running process (scheduler now; the web app joins it)."""

from __future__ import annotations

import asyncio
import logging
import signal

from mailer.config import Settings
from mailer.scheduler import start_scheduler

__all__ = ["run_service"]

log = logging.getLogger("mailer.service")


async def run_service(settings: Settings) -> None:
    """Run the scheduler until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scheduler = start_scheduler(settings)
    log.info("scheduler started; %d jobs", len(scheduler.get_jobs()))
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
