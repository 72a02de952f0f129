"""Rendering: Jinja templates into one MIME message per recipient (pure: no I/O but templates).

The mailer, not the template, adds the footer (sender identity and unsubscribe link, rule 2) to
both parts, and the List-Unsubscribe headers (RFC 2369, RFC 8058). Images must be linked by
absolute https URL, not embedded (rule 5): `cid:`, `data:`, `http:` and relative URLs are
refused. CSS in `<style>` is inlined once per template (mailer.core.htmlmail); a campaign without a
text template gets a text part made from its HTML; with `[dkim]` every message is signed
(mailer.core.dkim) with the key the caller loaded once per campaign.
"""

from __future__ import annotations

import quopri
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)

from mailer.config import Settings
from mailer.core.addresses import wire_address
from mailer.core.dkim import SigningKey, sign_message
from mailer.core.headers import check_header_value, encode_address, encode_header, encode_phrase
from mailer.core.htmlmail import html_to_text, image_problems, inline_template_css, protect_jinja
from mailer.errors import TemplateError

__all__ = [
    "BUNDLED_TEMPLATES",
    "CampaignContent",
    "MessageFactory",
    "Recipient",
    "RenderedMessage",
    "find_embedded_images",
    "make_environment",
    "quoted_printable",
]

_PACKAGE = Path(__file__).parent.parent  # mailer/
_PACKAGE_TEMPLATES = _PACKAGE / "templates"  # inside an installed wheel
_SOURCE_TEMPLATES = _PACKAGE.parent / "templates"  # in a source checkout
BUNDLED_TEMPLATES = _PACKAGE_TEMPLATES if _PACKAGE_TEMPLATES.is_dir() else _SOURCE_TEMPLATES
LOCALES = ("nl", "en")

_EMBEDDED = re.compile(
    r"""(?:\b(?:src|href|background|poster|srcset)\s*=\s*["']?\s*|url\(\s*["']?\s*)(cid:|data:)""",
    re.IGNORECASE,
)


def make_environment(settings: Settings) -> Environment:
    """Jinja environment: the user's templates_dir first, then the bundled templates/."""
    dirs: list[str] = []
    if settings.templates_dir:
        dirs.append(settings.templates_dir)
    dirs.append(str(BUNDLED_TEMPLATES))
    return Environment(
        loader=ChoiceLoader([FileSystemLoader(d) for d in dirs]),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def find_embedded_images(html: str) -> list[str]:
    """The embedded-image schemes (`cid:`, `data:`) an HTML text refers to."""
    lowered = html.lower()
    if "cid:" not in lowered and "data:" not in lowered:
        return []  # the common case, without running the regular expression
    return [m.group(1).lower() for m in _EMBEDDED.finditer(html)]


def quoted_printable(text: str) -> bytes:
    """`text` as a UTF-8, quoted-printable body with CRLF line ends."""
    # Quoted-printable keeps every line under 76 octets (RFC 2045) and CRLF only (no bare LF).
    body = quopri.encodestring(text.replace("\r\n", "\n").encode("utf-8"))
    return body.replace(b"\n", b"\r\n")


@dataclass(frozen=True, slots=True)
class Recipient:
    contact_id: int
    email: str
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None

    @property
    def display_name(self) -> str | None:
        name = " ".join(p for p in (self.first_name, self.last_name) if p)
        return name or None


@dataclass(frozen=True, slots=True)
class CampaignContent:
    name: str
    subject: str
    template: str
    list_name: str


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    message_id: str
    data: bytes
    unsubscribe_url: str


class _Parts:
    """The compiled templates of one campaign in one locale, CSS inlined, images checked."""

    def __init__(self, env: Environment, template: str, locale: str) -> None:
        name = f"campaigns/{template}/{locale}.html"
        self.html = _load(env, name)  # syntax errors reported with the template's own lines
        self.footer_html = _load(env, f"mail/footer.{locale}.html")
        self.footer_text = _load(env, f"mail/footer.{locale}.txt")
        try:  # no text template: the text part is made from the HTML (html_to_text)
            self.text: Template | None = _load(env, f"campaigns/{template}/{locale}.txt")
        except TemplateError:
            self.text = None
        source = env.loader.get_source(env, name)[0]  # type: ignore[union-attr]
        if embedded := find_embedded_images(source):
            raise TemplateError(
                f"embeds images ({', '.join(sorted(set(embedded)))}); marketing mail must link "
                "images by https URL, not embed them",
                file=name,
            )
        try:
            bad, self.variable_images = image_problems(protect_jinja(source).html)
        except TemplateError as exc:
            raise TemplateError(exc.reason, file=name) from None
        if bad:
            raise TemplateError(_image_message(bad), file=name)
        inlined = inline_template_css(source, file=name)
        if inlined is not None:
            # Compiled under the template's name, so .html autoescaping applies as before.
            code = env.compile(inlined, name=name, filename=name)
            self.html = env.template_class.from_code(env, code, env.make_globals(None))
        self.render_html = _renderer(self.html)
        self.render_text = _renderer(self.text) if self.text is not None else None


def _renderer(template: Template) -> Callable[[Mapping[str, Any]], str]:
    """`template.render` without merging the template's globals (a ChainMap, slow to copy)
    into a new dict on every call: they are copied once, here."""
    base = dict(template.globals)
    concat = template.environment.concat

    def render(context: Mapping[str, Any]) -> str:
        variables = {**base, **context}  # shared=True: the context is these, as they are
        return str(concat(template.root_render_func(template.new_context(variables, shared=True))))

    return render


def _list_id(phrase: str, list_id: str) -> str:
    # RFC 2919: only the phrase may be encoded; the <list-id> stays as it is.
    line = f"List-Id: {phrase} <{list_id}>"
    return line if len(line) <= 78 else f"List-Id: {phrase}\r\n <{list_id}>"


def _image_message(bad: Sequence[str]) -> str:
    shown = ", ".join(f'"{u[:80]}"' for u in sorted(set(bad))[:3])
    return (
        f"links images by {shown}; images must be absolute https:// URLs (mail clients block "
        "http: images, and relative, cid: and data: URLs are refused: rule 5)"
    )


def _load(env: Environment, name: str) -> Template:
    try:
        return env.get_template(name)
    except TemplateNotFound:
        raise TemplateError("the template does not exist", file=name) from None
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", file=name, line=exc.lineno) from exc


class MessageFactory:
    """Builds the message of one campaign for each recipient. Templates are compiled once."""

    def __init__(
        self,
        env: Environment,
        settings: Settings,
        campaign: CampaignContent,
        unsubscribe_token: Any,
        dkim: SigningKey | Sequence[SigningKey] | None = None,
    ) -> None:
        self._env = env
        self._settings = settings
        self._campaign = campaign
        self._token = unsubscribe_token  # (contact_id, list_name, basis, email) -> str
        # Loaded and parsed once per campaign by the caller; None (or none) without [dkim].
        self._dkim = dkim or None
        self._parts: dict[str, _Parts] = {}
        self._footer_cache: dict[tuple[int, str], tuple[str, str]] = {}
        self._last_date: tuple[object, str] = (None, "")
        sender = settings.sender
        self._list_title = settings.lists[campaign.list_name].title
        check_header_value("subject", campaign.subject)
        self._static_headers = "\r\n".join(
            [
                "From: " + encode_address(sender.from_name, sender.from_address),
                encode_header("Subject", campaign.subject),
                *([f"Reply-To: {encode_address(None, sender.reply_to)}"]
                  if sender.reply_to else []),
                _list_id(encode_phrase(self._list_title), f"{campaign.list_name}.{sender.domain}"),
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                "MIME-Version: 1.0",
            ]
        )  # fmt: skip
        self.parts_for(settings.locale)  # fail early on a missing or bad template

    def parts_for(self, locale: str | None) -> _Parts:
        chosen = locale if locale in LOCALES else self._settings.locale
        parts = self._parts.get(chosen)
        if parts is None:
            try:
                parts = _Parts(self._env, self._campaign.template, chosen)
            except TemplateError:
                if chosen == self._settings.locale:
                    raise
                parts = self.parts_for(self._settings.locale)  # no template in that language
            self._parts[chosen] = parts
        return parts

    def _footers(self, parts: _Parts, basis: str) -> tuple[str, str]:
        """The footer of `parts` for `basis`, rendered once, with a slot for the link.

        Footers see only the sender, the list, the basis and the unsubscribe link (never the
        contact), so one rendering per locale and basis serves every recipient.
        """
        key = (id(parts), basis)
        cached = self._footer_cache.get(key)
        if cached is None:
            context = {
                "sender": self._settings.sender,
                "list_title": self._list_title,
                "basis": basis,
                "unsubscribe_url": _URL_SLOT,
            }
            cached = (parts.footer_html.render(context), parts.footer_text.render(context))
            self._footer_cache[key] = cached
        return cached

    def _date(self, now: datetime) -> str:
        """The Date header value (RFC 5322 §3.3), formatted once per second, not per message."""
        second = (int(now.timestamp()), now.utcoffset())
        if self._last_date[0] != second:
            self._last_date = (second, format_datetime(now.replace(microsecond=0)))
        return self._last_date[1]

    def _feedback_id(self, basis: str) -> list[str]:
        """Gmail's feedback loop header, `campaign:list:basis:sender-id` (its last field is the
        sender's id; campaign and list names have no colons), when sender.feedback_id is set."""
        sender_id = self._settings.sender.feedback_id
        if not sender_id:
            return []
        c = self._campaign
        return [f"Feedback-ID: {c.name}:{c.list_name}:{basis}:{sender_id}"]

    def render(
        self, recipient: Recipient, *, basis: str, now: datetime, delivery_ref: str = ""
    ) -> RenderedMessage:
        settings, sender = self._settings, self._settings.sender
        # The basis goes into the link: unsubscribing from a customer-basis mail is an
        # objection to that basis, from a role-address mail an end to all mail (issue 14).
        token = self._token(recipient.contact_id, self._campaign.list_name, basis, recipient.email)
        unsubscribe_url = f"{settings.web.base_url}/unsubscribe/{token}"
        mailto = f"mailto:{sender.unsubscribe_mailto}?subject=" + _quoted_subject(token)
        parts = self.parts_for(recipient.locale)
        context: Mapping[str, Any] = {
            "contact": recipient,
            "first_name": recipient.first_name or "",
            "campaign": self._campaign,
            "sender": sender,
            "list_title": self._list_title,
            "unsubscribe_url": unsubscribe_url,
            "basis": basis,
        }
        try:
            footer_html, footer_text = self._footers(parts, basis)
            body = parts.render_html(context)
            html = _with_footer_html(body, footer_html.replace(_URL_SLOT, unsubscribe_url))
            text = (
                (parts.render_text(context) if parts.render_text else html_to_text(body)).rstrip()
                + "\n\n-- \n"
                + footer_text.replace(_URL_SLOT, unsubscribe_url)
            )
        except UndefinedError as exc:
            raise TemplateError(
                f"uses an unknown variable: {exc.message}",
                file=f"campaigns/{self._campaign.template}",
            ) from exc
        if embedded := find_embedded_images(html):
            raise TemplateError(
                f"the rendered message embeds images ({', '.join(sorted(set(embedded)))}); "
                "link images by https URL instead",
                file=f"campaigns/{self._campaign.template}",
            )
        if parts.variable_images and (bad := image_problems(body)[0]):
            raise TemplateError(_image_message(bad), file=f"campaigns/{self._campaign.template}")
        unique = secrets.token_hex(30)  # one read of the system's randomness, not three
        ref = delivery_ref or unique[48:]
        message_id = f"<{ref}.{unique[:16]}@{sender.domain}>"
        boundary = "=_" + unique[16:48]
        to = wire_address(recipient.email)  # IDN domain as A-label (RFC 5891)
        headers = "\r\n".join(
            [
                self._static_headers,
                "To: " + encode_address(recipient.display_name, to, utf8=not to.isascii()),
                f"Date: {self._date(now)}",
                f"Message-ID: {message_id}",
                *self._feedback_id(basis),
                f"List-Unsubscribe: <{unsubscribe_url}>,\r\n <{mailto}>",
                f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"',
            ]
        )
        data = b"".join(
            [
                # ASCII, except a non-ASCII local part in To (RFC 6532: sent only with SMTPUTF8).
                headers.encode("utf-8"),
                b"\r\n\r\n",
                _part(boundary, "text/plain", quoted_printable(text)),
                _part(boundary, "text/html", quoted_printable(html)),
                f"--{boundary}--\r\n".encode("ascii"),
            ]
        )
        if self._dkim is not None:
            data = sign_message(data, self._dkim, timestamp=int(now.timestamp()))
        return RenderedMessage(message_id, data, unsubscribe_url)


_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote() leaves alone (and "/")


def _quoted_subject(token: str) -> str:
    """`quote("unsubscribe " + token)`: a signed token is URL-safe already (base64url and
    "."), so only the space needs escaping; anything else goes through quote()."""
    if _URL_SAFE.fullmatch(token):
        return "unsubscribe%20" + token
    return quote(f"unsubscribe {token}")


# Stands in for the unsubscribe URL in cached footers; no template or URL contains it.
_URL_SLOT = "\x00unsubscribe-url\x00"


def _part(boundary: str, content_type: str, body: bytes) -> bytes:
    head = (
        f'--{boundary}\r\nContent-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode("ascii") + body + (b"" if body.endswith(b"\r\n") else b"\r\n")


def _with_footer_html(html: str, footer: str) -> str:
    # Before </body> when the template has one, so the footer is inside the document.
    index = html.lower().rfind("</body>")
    if index == -1:
        return html + footer
    return html[:index] + footer + html[index:]


def available_templates(env: Environment) -> Sequence[str]:
    return sorted({n.split("/")[1] for n in env.list_templates() if n.startswith("campaigns/")})
