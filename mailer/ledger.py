"""The hot path of a run against the delivery ledger: fetch due rows, claim, record.

Statements are built once per run (SQLAlchemy then reuses their compiled form) and run on one
connection held for the run: this is per-message work, and it must stay cheap next to SMTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Dialect,
    Engine,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from mailer.models import (
    Consent,
    ConsentEvent,
    ConsentOrigin,
    Contact,
    Delivery,
    DeliveryStatus,
    Suppression,
    SuppressionReason,
)
from mailer.policy import SkipReason
from mailer.render import Recipient

__all__ = ["DueDelivery", "Ledger"]

_delivery = Delivery.__table__  # type: ignore[attr-defined]
_contact = Contact.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_consent = Consent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DueDelivery:
    delivery_id: int
    basis: str
    recipient: Recipient


class _Prepared:
    """A statement compiled once for one dialect, executed without per-call compilation.

    SQLAlchemy's per-execution work (cache key, execution context) cost more than the SQL
    itself on this path, measured with benchmarks/send_throughput.py. Only public compiler
    API is used: the SQL text, `construct_params`, `positiontup` and each type's
    `bind_processor`, so datetimes are converted exactly as SQLAlchemy would.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or ()) if compiled.positional else None
        self.convert = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.bind_processor(dialect)) is not None
        }

    def params(self, values: Mapping[str, Any]) -> Any:
        params = self.compiled.construct_params(dict(values))
        assert params is not None
        for name, convert in self.convert.items():
            if name in params:
                params[name] = convert(params[name])
        return tuple(params[n] for n in self.order) if self.order is not None else params

    def run(self, conn: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self.params(values))


class Ledger:
    def __init__(self, engine: Engine, campaign_id: int, list_name: str, key_count: int) -> None:
        self._conn = engine.connect()
        d = _delivery.c
        self._due = (
            select(
                d.id, d.basis, _contact.c.id.label("contact_id"), _contact.c.email,
                _contact.c.first_name, _contact.c.last_name, _contact.c.locale,
            )
            .join(_contact, _contact.c.id == d.contact_id)
            .where(
                d.campaign_id == campaign_id,
                d.id > bindparam("after"),
                or_(
                    d.status == DeliveryStatus.QUEUED,
                    and_(d.status == DeliveryStatus.DEFERRED,
                         d.next_attempt_at <= bindparam("now", type_=d.next_attempt_at.type)),
                ),
            )
            .order_by(d.id)
            .limit(bindparam("page"))
        )  # fmt: skip
        self._next_retry = select(func.min(d.next_attempt_at)).where(
            d.campaign_id == campaign_id, d.status == DeliveryStatus.DEFERRED
        )
        # One bind parameter per secret key: a suppression made before a key rotation holds.
        self._hash_params = [f"h{i}" for i in range(key_count)]
        # A suppression that the person lifted afterwards by confirming a new double opt-in
        # for this list on our own page (policy rule 1) no longer blocks, as in policy.decide.
        self_confirmed = (
            select(func.max(_consent.c.at))
            .where(
                _consent.c.contact_id == d.contact_id,
                _consent.c.list_name == list_name,
                _consent.c.event == ConsentEvent.CONFIRMED,
                _consent.c.origin == ConsentOrigin.WEB,
            )
            .correlate(_delivery)
            .scalar_subquery()
        )
        suppressed = exists().where(
            _suppression.c.address_hash.in_([bindparam(p) for p in self._hash_params]),
            or_(_suppression.c.scope.is_(None), _suppression.c.scope == list_name),
            or_(self_confirmed.is_(None), _suppression.c.at >= self_confirmed),
        )
        # Spelled out rather than IN (...): an expanding IN cannot be compiled once (_Prepared).
        pending = and_(
            d.id == bindparam("delivery_id"),
            or_(d.status == DeliveryStatus.QUEUED, d.status == DeliveryStatus.DEFERRED),
        )
        self._claim = (
            update(_delivery)
            .where(pending, ~suppressed)
            .values(status=DeliveryStatus.SENDING, attempts=d.attempts + 1)
            .returning(d.attempts)
        )
        self._suppress = (
            update(_delivery)
            .where(pending, suppressed)
            .values(status=DeliveryStatus.SUPPRESSED, skip_reason=SkipReason.SUPPRESSED)
        )
        dialect = self._conn.dialect
        self._claim_sql = _Prepared(self._claim, dialect)
        self._record_sql = _Prepared(
            update(_delivery)
            .where(d.id == bindparam("delivery_id"))
            .values(
                status=bindparam("status"),
                smtp_reply=bindparam("smtp_reply"),
                message_id=bindparam("message_id"),
                sent_at=bindparam("sent_at", type_=d.sent_at.type),
                next_attempt_at=bindparam("next_attempt_at", type_=d.next_attempt_at.type),
            ),
            dialect,
        )

    def due(self, after_id: int, now: datetime, page: int) -> list[DueDelivery]:
        with self._conn.begin():
            rows = self._conn.execute(self._due, {"after": after_id, "now": now, "page": page})
            return [
                DueDelivery(
                    r.id,
                    r.basis,
                    Recipient(r.contact_id, r.email, r.first_name, r.last_name, r.locale),
                )
                for r in rows
            ]

    def next_retry_at(self) -> datetime | None:
        with self._conn.begin():
            moment: datetime | None = self._conn.execute(self._next_retry).scalar()
        return moment

    def claim(self, delivery_id: int, hashes: Sequence[str]) -> int | str | None:
        """Claim a due row for sending, re-checking suppression (rule 3) in the same statement.

        Returns the attempt number, `"suppressed"` if the person was suppressed meanwhile (the
        row is marked so), or None if the row is no longer due (another run took it).
        """
        params = {"delivery_id": delivery_id, **dict(zip(self._hash_params, hashes, strict=True))}
        with self._conn.begin():
            claimed = self._claim_sql.run(self._conn, params).first()
            if claimed is not None:
                return int(claimed[0])
            if self._conn.execute(self._suppress, params).rowcount:
                return DeliveryStatus.SUPPRESSED.value
        return None

    def record(
        self,
        delivery_id: int,
        *,
        status: DeliveryStatus,
        smtp_reply: str,
        message_id: str,
        at: datetime,
        next_attempt_at: datetime | None = None,
        hard_bounce_hash: str | None = None,
    ) -> None:
        """Store a reply's outcome; a hard bounce also suppresses the address, atomically."""
        with self._conn.begin():
            self._record_sql.run(
                self._conn,
                {
                    "delivery_id": delivery_id,
                    "status": status,
                    "smtp_reply": smtp_reply[:1000],
                    "message_id": message_id,
                    "sent_at": at if status is DeliveryStatus.SENT else None,
                    "next_attempt_at": next_attempt_at,
                },
            )
            if hard_bounce_hash is not None:
                self._conn.execute(
                    _suppression.insert().values(
                        address_hash=hard_bounce_hash,
                        reason=SuppressionReason.HARD_BOUNCE,
                        scope=None,
                        at=at,
                    )
                )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
