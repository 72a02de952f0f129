"""HTML pages (Jinja, autoescaped) and the security headers every answer carries (added by
double_optin.guard.Door).

Pages live in `templates/pages/{nl,en}/NAME.html` and extend `templates/pages/base.html`; a
`templates_dir` of the user is searched first, so a shop can restyle them. The stylesheet is
served by the app itself: no assets from other hosts, which the CSP below also enforces.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, Template
from starlette.responses import HTMLResponse, Response

from mailer.config import Settings
from mailer.core.render import BUNDLED_TEMPLATES, LOCALES, make_environment

__all__ = ["LOCALES", "SECURITY_HEADERS", "Pages", "pick_locale"]

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    # Nothing but our own stylesheet; forms post only to us; no framing (clickjacking of the
    # confirm and unsubscribe buttons), no <base> tricks, no plugins.
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Confirm and unsubscribe URLs carry tokens: never leak them to another site in a Referer.
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    # Pages with tokens must not sit in shared caches.
    (b"cache-control", b"no-store"),
)


def pick_locale(requested: str | None, fallback: str) -> str:
    return requested if requested in LOCALES else fallback


# Rendered answer pages kept for `render(..., cached=True)`: a burst of one-click unsubscribes
# gets the same few pages thousands of times, and rendering one cost more than the rest of the
# answer. Only pages whose context holds no personal data are kept (list titles, flags).
_CACHED_PAGES = 256


class Pages:
    def __init__(self, settings: Settings, env: Environment | None = None) -> None:
        self.settings = settings
        self.env = env or make_environment(settings)
        self.stylesheet = (BUNDLED_TEMPLATES / "pages" / "page.css").read_bytes()
        self._rendered: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def titles(
        self, list_names: tuple[str, ...] | list[str], locale: str | None = None
    ) -> list[str]:
        lists = self.settings.lists
        chosen = pick_locale(locale, self.settings.locale)
        return [lists[n].text_for(chosen).title if n in lists else n for n in list_names]

    def render(
        self,
        name: str,
        locale: str | None,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        root: str = "./",
        cached: bool = False,
    ) -> Response:
        """`root` is the relative way back to the app's root ("../" under /confirm/TOKEN), so
        links and the stylesheet also work when the app is served under a path prefix.
        `cached`: the context holds no personal data, and the page may be kept for the next
        answer with the same context (the templates are still checked for changes)."""
        chosen = pick_locale(locale, self.settings.locale)
        template = self.env.get_template(f"pages/{chosen}/{name}.html")
        if not cached:
            return HTMLResponse(self._html(template, chosen, context, root), status_code=status)
        # A changed page or base template is loaded again as a new object: a new key.
        base = self.env.get_template("pages/base.html")
        frozen = tuple(
            (k, tuple(v) if isinstance(v, list) else v) for k, v in (context or {}).items()
        )
        key = (template, base, root, frozen)
        if (html := self._rendered.get(key)) is None:
            html = self._rendered[key] = self._html(template, chosen, context, root)
            if len(self._rendered) > _CACHED_PAGES:
                self._rendered.popitem(last=False)
        return HTMLResponse(html, status_code=status)

    def _html(
        self, template: Template, chosen: str, context: Mapping[str, Any] | None, root: str
    ) -> str:
        return template.render(
            {
                "locale": chosen,
                "sender": self.settings.sender,
                # Each list's title and wording in the page's language: what the person
                # reads here is what the consent records (flow.signup uses the same text).
                "lists": {n: item.text_for(chosen) for n, item in self.settings.lists.items()},
                "root": root,
                "policy": self.settings.policy,  # retention_days: GDPR art. 13(2)(a)
                **(context or {}),
            }
        )
