"""`mailer serve`: the web endpoints and the scheduler, in one process and one event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn

from mailer.config import Settings
from mailer.scheduler import follow_job_store, start_scheduler

__all__ = ["run_service"]

log = logging.getLogger("mailer.service")


async def run_service(settings: Settings, app: Any) -> None:
    """Serve `app` on web.host:web.port with the scheduler beside it, until SIGINT/SIGTERM."""
    web = settings.web
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=web.host,
            port=web.port,
            # Behind a reverse proxy on loopback, the client IP (consent evidence, rate limits)
            # comes from X-Forwarded-For; uvicorn trusts it from 127.0.0.1 only.
            proxy_headers=True,
            server_header=False,
            # The access log would record every unsubscribe token and IP address in plain text.
            access_log=False,
            log_level="info",
        )
    )
    scheduler = start_scheduler(settings)
    log.info("scheduler started; %d jobs", len(scheduler.get_jobs()))
    following = asyncio.create_task(follow_job_store(scheduler, settings.scheduler.poll_seconds))
    try:
        await server.serve()  # returns on SIGINT or SIGTERM (uvicorn's own handlers)
    finally:
        following.cancel()
        scheduler.shutdown(wait=False)
