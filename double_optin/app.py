"""The web endpoints (DESIGN.md, "HTTP"). Routes only: parse, call the flow, render the outcome.

No route sets a cookie or answers with a redirect: RFC 8058 §3.2 forbids both for the one-click
unsubscribe, and without redirects there is no open redirect either. All pages work without
JavaScript (there is none).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import BackgroundTasks, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import Engine, text
from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.responses import Response

from double_optin.flow import (
    ALL_LISTS,
    ConfirmOutcome,
    Flow,
    Seen,
    SignupOutcome,
    SignupStatus,
    TokenStatus,
)
from double_optin.guard import Door, RefusedEvidence, evidence_refusal, is_cross_site
from double_optin.lane import BurstLane
from double_optin.pages import Pages, pick_locale
from double_optin.schemas import ListInfo, Problem, SignupAnswer, SignupRequest
from double_optin.webhooks import Fetch, WebhookDesk
from mailer.config import Settings
from mailer.core.text import printable
from mailer.delivery.sending import Connection
from mailer.store.db import make_engine

__all__ = ["create_app"]

_LANG_PATTERN = "^(nl|en)$"
_LANGS = ("nl", "en")
LangQuery = Annotated[str | None, Query(pattern=_LANG_PATTERN, include_in_schema=False)]
_ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 §3.1: the POST body


def _own_form(page: Response) -> Response:
    # The signup page carries no token: its own POST may name its origin (with no-referrer
    # the browser would send "Origin: null", which is refused as cross-site).
    page.headers["referrer-policy"] = "same-origin"
    return page


def _seen(request: Request, *, refuse: bool = True) -> Seen:
    """Who is asking, as evidence. A user agent holding control characters is refused (400),
    or, where refusing would keep a person from leaving (`refuse=False`: unsubscribe), stored
    escaped: evidence never holds a raw control character (issue 14, row 2)."""
    user_agent = request.headers.get("user-agent")
    if (refusal := evidence_refusal("user-agent", user_agent)) is not None:
        if refuse:
            raise refusal
        user_agent = printable(user_agent or "")
    return Seen(ip=request.client.host if request.client else None, user_agent=user_agent)


def _lang(request: Request) -> str | None:
    """The `lang` query parameter of the burst routes, checked as LangQuery checks it, with
    the same 400: read here, not injected, because FastAPI's dependency solving for it and
    for BackgroundTasks was a tenth of a one-click unsubscribe's CPU (docs/performance.md)."""
    lang = request.query_params.get("lang")
    if lang is None or lang in _LANGS:
        return lang
    raise RequestValidationError(
        [{"type": "string_pattern_mismatch", "loc": ("query", "lang"),
          "msg": f"String should match pattern '{_LANG_PATTERN}'", "input": lang}]
    )  # fmt: skip


async def _form(request: Request) -> FormData:
    try:
        return await request.form(max_files=0, max_fields=50, max_part_size=64 * 1024)
    except Exception:  # a malformed body is answered like an empty one, never with a 500
        return FormData()


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    connect: Callable[[], Connection] | None = None,
    fetch: Fetch | None = None,
) -> FastAPI:
    """The ASGI app. `engine`, `clock`, `connect` (SMTP) and `fetch` (the SNS certificate
    and subscription URLs, double_optin.sns) are seams for tests."""
    engine = engine or make_engine(settings.database.url, source=settings.source)
    flow = Flow(engine, settings, connect=connect, **({"clock": clock} if clock else {}))
    pages = Pages(settings)
    base = settings.web.base_url
    app = FastAPI(
        title=f"{settings.sender.organization}: mailing list signup",
        summary="Double opt-in signup, confirmation and one-click unsubscribe.",
        # Swagger UI loads its assets from a CDN; the schema itself stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
        # README: no redirects. Starlette would answer a trailing slash with a 307 whose
        # Location is built from the Host header (issue 14, row 9): an unknown path is a 404.
        redirect_slashes=False,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer echoes the input, and fails (a 500) on input it cannot encode
        # again, such as a lone surrogate: name the field and the problem, never the value.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        detail = printable(f"{where}: {first.get('msg', 'invalid')}.")
        return JSONResponse(Problem(error="invalid_request", detail=detail).model_dump(), 400)

    @app.exception_handler(RefusedEvidence)
    async def refused_evidence(request: Request, exc: RefusedEvidence) -> Response:
        if request.url.path.startswith("/api/"):
            problem = Problem(error="control_characters", detail=exc.reason)
            return JSONResponse(problem.model_dump(), 400)
        return pages.render("bad_request", request.query_params.get("lang"), status=400,
                            root="../" if request.url.path.count("/") > 1 else "./")  # fmt: skip

    def signup_page(outcome: SignupOutcome, locale: str, form: FormData) -> Response:
        if outcome.status is SignupStatus.RATE_LIMITED:
            answer = pages.render("rate_limited", locale, status=429)
            answer.headers["retry-after"] = "3600"
            return answer
        if outcome.status is SignupStatus.INVALID:
            context = {
                "error": outcome.error,
                "detail": outcome.detail,
                "email": str(form.get("email") or ""),
                "chosen": [str(v) for v in form.getlist("lists")],
            }
            return _own_form(pages.render("subscribe", locale, context, status=400))
        return pages.render("subscribe_sent", locale)

    def confirm_page(outcome: ConfirmOutcome, token_locale: str | None) -> Response:
        locale = outcome.locale or token_locale
        context = {"titles": pages.titles(outcome.lists, locale)}
        match outcome.status:
            case TokenStatus.READY:
                return pages.render("confirm", locale, context, root="../")
            case TokenStatus.CONFIRMED:
                return pages.render("confirmed", locale, context, root="../")
            case TokenStatus.RENEWED:
                return pages.render("subscribe_sent", locale, root="../")
            case TokenStatus.EXPIRED:
                return pages.render("confirm_expired", locale, status=400, root="../")
            case TokenStatus.STALE:
                return pages.render("confirm_stale", locale, status=410, root="../")
            case _:
                return pages.render("link_invalid", locale, status=400, root="../")

    @app.get("/subscribe", include_in_schema=False)
    async def subscribe_form(lang: LangQuery = None) -> Response:
        return _own_form(
            pages.render(
                "subscribe", lang, {"email": "", "chosen": [], "error": None, "detail": None}
            )
        )

    @app.post("/subscribe", include_in_schema=False)
    async def subscribe(request: Request) -> Response:
        locale = pick_locale(_lang(request), settings.locale)
        headers = request.headers
        if is_cross_site(headers.get("origin"), headers.get("referer"), base):
            # Another site posting our form (issue 14, row 6): it would store the visitor's IP
            # as evidence of a signup they never made. Nothing is read or stored.
            return pages.render("cross_site", locale, status=403)
        form = await _form(request)
        outcome = await flow.signup(
            str(form.get("email") or ""),
            [str(v) for v in form.getlist("lists")],
            honeypot=str(form.get("website") or ""),
            locale=locale,
            source=f"{base}/subscribe",
            seen=_seen(request),
        )
        answer = signup_page(outcome, locale, form)
        if outcome.mail is not None:
            # After the answer: its timing then says nothing about the address, and a slow
            # relay does not hold the page.
            answer.background = BackgroundTask(flow.send, outcome.mail)
        return answer

    @app.get("/confirm/{token}", include_in_schema=False)
    async def confirm_view(token: str, lang: LangQuery = None) -> Response:
        return confirm_page(await flow.confirm_view(token), lang)

    @app.post("/confirm/{token}", include_in_schema=False)
    async def confirm(
        token: str, request: Request, background: BackgroundTasks, lang: LangQuery = None
    ) -> Response:
        form = await _form(request)
        if form.get("renew"):
            outcome = await flow.renew(token, _seen(request))
            if outcome.mail is not None:
                background.add_task(flow.send, outcome.mail)
        else:
            outcome = await flow.confirm(token, _seen(request))
            for welcome in outcome.welcomes:
                # After the answer, like the confirmation mail: the consent is already stored.
                background.add_task(flow.welcome, welcome)
        return confirm_page(outcome, lang)

    @app.get("/unsubscribe/{token}", include_in_schema=False)
    async def unsubscribe_view(token: str, lang: LangQuery = None) -> Response:
        outcome = await flow.unsubscribe_view(token)
        if outcome.status is TokenStatus.FORGED:
            return pages.render("link_invalid", lang, status=400, root="../")
        if outcome.status is TokenStatus.STALE:
            return pages.render(
                "unsubscribed", lang, {"titles": [], "everything": True}, root="../"
            )
        context = {
            "choices": list(
                zip(
                    outcome.subscribed,
                    pages.titles(outcome.subscribed, outcome.locale or lang),
                    strict=True,
                )
            ),  # fmt: skip
            "current": outcome.list_name,
            "all_lists": ALL_LISTS,
            "basis": outcome.basis,
        }
        return pages.render("unsubscribe", outcome.locale or lang, context, root="../")

    @app.post(
        "/unsubscribe/{token}",
        summary="Unsubscribe (RFC 8058 one-click, or the button of the unsubscribe page)",
        response_class=Response,
        responses={200: {"description": "Unsubscribed."}, 400: {"description": "Forged link."}},
    )
    async def unsubscribe(token: str, request: Request) -> Response:
        lang = _lang(request)
        form = await _form(request)
        # RFC 8058 §3.1: the one-click POST carries List-Unsubscribe=One-Click, urlencoded or
        # multipart, and no cookie or other credential: the signed token is the authority.
        one_click = form.get(_ONE_CLICK[0]) == _ONE_CLICK[1]
        scope = None if one_click else str(form.get("scope") or "") or None
        how = (
            "one-click unsubscribe (RFC 8058 List-Unsubscribe-Post)"
            if one_click
            else "unsubscribe page: " + ("all lists" if scope == ALL_LISTS else "one list")
        )
        seen = _seen(request, refuse=False)  # an unsubscribe is never refused
        outcome = await flow.unsubscribe(token, scope=scope, how=how, seen=seen)
        if outcome.status is TokenStatus.FORGED:
            return pages.render("link_invalid", lang, status=400, root="../")
        titles = pages.titles(outcome.left, outcome.locale or lang)
        context = {"titles": titles, "everything": outcome.everything}
        # RFC 8058 §3.2: answer the POST itself; never a redirect. The page names lists, not
        # the person: under a burst the same few pages are answered from the cache.
        answer = pages.render(
            "unsubscribed", outcome.locale or lang, {**context, "basis": outcome.basis},
            root="../", cached=True,
        )  # fmt: skip
        if outcome.ack is not None:
            # After the answer, like the confirmation mail: the unsubscribe is already stored.
            answer.background = BackgroundTask(flow.acknowledge, outcome.ack)
        return answer

    @app.get("/assets/page.css", include_in_schema=False)
    async def stylesheet() -> Response:
        return Response(
            pages.stylesheet,
            media_type="text/css",
            headers={"cache-control": "public, max-age=3600"},
        )

    @app.get("/healthz", summary="Liveness and database check")
    async def healthz() -> JSONResponse:
        def probe() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.to_thread(probe)
        except Exception as exc:  # any database failure means "not healthy"
            return JSONResponse({"status": "error", "detail": type(exc).__name__}, 503)
        return JSONResponse({"status": "ok"})

    @app.get("/api/lists", summary="The lists a form may offer, with their exact wording")
    async def api_lists(lang: LangQuery = None) -> list[ListInfo]:
        # The text in `lang` is what a signup with that `locale` records as its wording.
        texts = {name: item.text_for(lang) for name, item in settings.lists.items()}
        return [ListInfo(name=n, title=t.title, wording=t.wording) for n, t in texts.items()]

    @app.post(
        "/api/subscribe",
        summary="Sign up from an existing website form (double opt-in)",
        status_code=202,
        response_model=SignupAnswer,
        responses={
            400: {"model": Problem, "description": "Invalid address or unknown list."},
            429: {"model": Problem, "description": "Too many signups from this IP address."},
        },
    )
    async def api_subscribe(
        body: SignupRequest, request: Request, background: BackgroundTasks
    ) -> Any:
        source = body.source_url or f"{base}/api/subscribe"
        if (refusal := evidence_refusal("source_url", source)) is not None:
            raise refusal
        if not source.startswith(("https://", "http://")):
            return JSONResponse(
                Problem(
                    error="invalid_source_url", detail="source_url must be an http(s) URL."
                ).model_dump(),
                400,
            )
        outcome = await flow.signup(
            body.email,
            body.lists,
            honeypot=body.website,
            locale=pick_locale(body.locale, settings.locale),
            source=source,
            seen=_seen(request),
        )
        if outcome.mail is not None:
            background.add_task(flow.send, outcome.mail)
        if outcome.status is SignupStatus.RATE_LIMITED:
            problem = Problem(error="rate_limited", detail="Too many signups; try again later.")
            return JSONResponse(problem.model_dump(), 429, headers={"retry-after": "3600"})
        if outcome.status is SignupStatus.INVALID:
            detail = outcome.detail or {
                "no_list": "Choose at least one list.",
                "unknown_list": "A list in `lists` is not configured (see GET /api/lists).",
            }.get(outcome.error or "", "Invalid input.")
            problem = Problem(error=outcome.error or "invalid", detail=detail)
            return JSONResponse(problem.model_dump(), 400)
        return SignupAnswer()

    # Relays' bounce and complaint webhooks (double_optin.webhooks): each authenticated the way
    # its provider signs; forged -> 401, retried -> 200 and no change twice.
    desk = WebhookDesk(engine, settings, clock or (lambda: datetime.now(UTC)), fetch)

    async def webhook(provider: str, request: Request) -> JSONResponse:
        status, answer = await desk.receive(provider, request)
        return JSONResponse(answer, status)

    @app.post("/webhooks/postmark", include_in_schema=False)
    async def webhook_postmark(request: Request) -> JSONResponse:
        return await webhook("postmark", request)

    @app.post("/webhooks/mailgun", include_in_schema=False)
    async def webhook_mailgun(request: Request) -> JSONResponse:
        return await webhook("mailgun", request)

    @app.post("/webhooks/ses", include_in_schema=False)
    async def webhook_ses(request: Request) -> JSONResponse:
        return await webhook("ses", request)

    # The two POSTs of a burst skip the framework's layers (double_optin.lane), inside Door:
    # the security headers, also on a 500 (double_optin.guard).
    burst = [r for r in app.routes if isinstance(r, APIRoute) and r.endpoint in (
        subscribe, unsubscribe)]  # fmt: skip
    handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
    app.add_middleware(BurstLane, routes=burst, handlers=handlers)
    app.add_middleware(Door)
    return app
