"""What stands at the door of every request: the security headers on every answer, no 500
without them, no personal data in the log, no control characters in evidence, no cross-site
signup.

`Door` adds the headers and catches what the app raises, so even an answer to a crash carries
the security headers; Starlette's own error middleware would otherwise answer (and log the
traceback with the SQL parameters: address, IP, user agent) outside of them. It logs the
exception's type and where it happened, and the path without its token, nothing else (issue
14, row 7). One middleware for both: each layer costs a coroutine and a send wrapper per
request, which showed under a burst of one-click unsubscribes (docs/performance.md).
"""

from __future__ import annotations

import logging
import traceback
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from double_optin.pages import SECURITY_HEADERS
from mailer.core.text import control_characters
from mailer.errors import InputError

__all__ = [
    "Door",
    "RefusedEvidence",
    "evidence_refusal",
    "is_cross_site",
    "loggable_path",
]

log = logging.getLogger("double_optin.errors")

_PAGE_500 = (
    b"<!doctype html><meta charset=utf-8><title>Error</title>"
    b"<p>Er ging iets mis; er is niets opgeslagen. Probeer het later opnieuw.</p>"
    b"<p>Something went wrong; nothing was stored. Please try again later.</p>"
)


class RefusedEvidence(InputError):
    """A value that would be stored as consent evidence holds control characters."""

    def __init__(self, field: str, found: list[str]) -> None:
        self.field_name = field
        super().__init__(
            f"{field} holds control characters ({', '.join(found)}); they are never stored "
            "as evidence."
        )


def evidence_refusal(field: str, value: str | None) -> RefusedEvidence | None:
    """The refusal for `value` when it may not be stored as evidence, else None."""
    found = control_characters(value or "")
    return RefusedEvidence(field, found) if found else None


def _origin(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return "invalid"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def is_cross_site(origin: str | None, referer: str | None, base_url: str) -> bool:
    """True when a form POST comes from another site (CSRF; OWASP: verify the origin with
    standard headers). `Origin` decides when present ("null", sent from sandboxed frames and
    pages without a referrer policy that allows it, counts as foreign); without it a
    `Referer` decides; with neither (privacy tools strip both) the POST is allowed."""
    ours = _origin(base_url)
    if origin is not None:
        return origin.strip().lower() == "null" or _origin(origin) != ours
    if referer:
        return _origin(referer) != ours
    return False


def loggable_path(path: str) -> str:
    """The path with any token left out: `/unsubscribe/TOKEN/x` -> `/unsubscribe/…`."""
    first = path.lstrip("/").split("/", 1)[0]
    return f"/{first}/…" if path.count("/") > 1 else f"/{first}"


class Door:
    """Pure ASGI middleware: the security headers (double_optin.pages) on every HTTP answer,
    and an unhandled exception turned into a plain 500 that carries them, logged without data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = message.get("headers", [])
                present = {name.lower() for name, _ in headers}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message["headers"] = [*headers, *extra]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the one place every unexpected failure ends up
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            # Type and place only: the message of a database error holds the row it wrote.
            log.error(
                "%s %s failed: %s at %s:%s",
                scope.get("method", "?"),
                loggable_path(str(scope.get("path", ""))),
                type(exc).__name__,
                frame.filename.rsplit("/", 1)[-1],
                frame.lineno,
            )
            if started:
                return  # a background task after the answer: nothing left to tell the client
            await tracking_send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/html; charset=utf-8"),
                        (b"content-length", str(len(_PAGE_500)).encode()),
                    ],
                }
            )
            await tracking_send({"type": "http.response.body", "body": _PAGE_500})
