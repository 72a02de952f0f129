"""One run of a campaign at a time, across processes and hosts, kept in the database.

The lock is a lease on the campaign row: an owner and a heartbeat. A run renews it while it
works; another run may take it over when the heartbeat is older than the lease, or at once when
the owner is a dead process on this same host (a run killed with SIGKILL and started again).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, or_, select, update

from mailer.errors import MailerError
from mailer.store.models import Campaign

__all__ = ["CampaignBusy", "RunLock", "is_dead_local_process", "owner_name"]

_campaign = Campaign.__table__  # type: ignore[attr-defined]


class CampaignBusy(MailerError):
    """The campaign is being sent by another run right now."""


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_dead_local_process(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RunLock:
    def __init__(
        self,
        engine: Engine,
        campaign: Campaign,
        *,
        clock: Callable[[], datetime],
        lease_seconds: float = 60.0,
    ) -> None:
        self.engine = engine
        self.campaign = campaign
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.owner = owner_name()

    def acquire(self) -> None:
        now = self.clock()
        c = _campaign.c
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(_campaign)
                .where(
                    c.id == self.campaign.id,
                    or_(c.run_owner.is_(None), c.run_heartbeat < now - self.lease),
                )
                .values(run_owner=self.owner, run_heartbeat=now)
            ).rowcount
            if taken:
                return
            holder, seen = conn.execute(
                select(c.run_owner, c.run_heartbeat).where(c.id == self.campaign.id)
            ).one()
            if holder and is_dead_local_process(holder):
                taken = conn.execute(
                    update(_campaign)
                    .where(and_(c.id == self.campaign.id, c.run_owner == holder))
                    .values(run_owner=self.owner, run_heartbeat=now)
                ).rowcount
                if taken:
                    return
        raise CampaignBusy(
            f'Campaign "{self.campaign.name}" is already being sent by {holder} (last seen '
            f"{seen:%Y-%m-%d %H:%M:%S} UTC); it is not started a second time."
        )

    def renew(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(_campaign)
                .where(_campaign.c.id == self.campaign.id, _campaign.c.run_owner == self.owner)
                .values(run_heartbeat=self.clock())
            )

    async def keep_alive(self) -> None:
        """Renew the lease until cancelled."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            self.renew()

    def release(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(_campaign)
                .where(_campaign.c.id == self.campaign.id, _campaign.c.run_owner == self.owner)
                .values(run_owner=None, run_heartbeat=None)
            )
