"""The burst lane: the one-click unsubscribe and the signup POST answered without the
framework's layers in between.

After a large campaign, mailbox providers post one-click unsubscribes (RFC 8058) in bursts.
Profiled under `benchmarks/web_load.py`, FastAPI's and Starlette's own layers (error and
exception middlewares, the exit stack, matching every route in turn, dependency solving) took
about a third of the server's CPU per request, more than the unsubscribe's database work. The
routes named here have endpoints that take the request and their path parameters only, so
this middleware can call them itself: it matches the route as the router would (the same
`APIRoute.matches`, so root paths and methods count as before), calls its endpoint and answers
an exception with the app's own handler for it, as the exception middleware would. Any other
request, and a route's other methods, go on to the app unchanged. It sits inside
double_optin.guard.Door, so the security headers and the safe 500 hold here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BurstLane"]

Handler = Callable[[Request, Exception], Awaitable[Response]]


class BurstLane:
    """Pure ASGI middleware: `routes` answered by their endpoints, `handlers` (the app's
    exception handlers, by class) for what they raise; everything else passes through."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[APIRoute],
        handlers: Mapping[Any, Callable[..., Any]],
    ) -> None:
        self.app = app
        self.routes = tuple(routes)
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await self._answer(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request=request, **scope["path_params"])
        except Exception as exc:
            handler = next(
                (self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None
            )
            if handler is None:
                raise  # to Door: a plain 500, logged without data
            response = await handler(request, exc)
        await response(scope, receive, send)
