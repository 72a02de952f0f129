"""HTML mail: CSS inlined once per template, https-only images, a text part from the HTML."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

import mailer.core.render
from mailer.core.htmlmail import html_to_text, image_problems, inline_template_css, protect_jinja
from mailer.core.render import CampaignContent, MessageFactory, Recipient, make_environment
from mailer.core.tokens import TokenSigner
from mailer.errors import TemplateError
from tests.conftest import make_settings

NOW = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
STYLED = """<!DOCTYPE html>
<html><head><title>{{ campaign.subject }}</title>
<style>p { color: #333333; } .cta { font-weight: bold; }
@media (max-width: 600px) { p { font-size: 18px; } }</style>
</head><body>
<p class="cta" title="{{ first_name }}">Beste {{ first_name or "klant" }},</p>
<table><tbody>{% for item in ["brood", "taart"] %}
<tr><td>{{ item }} &amp; meer</td></tr>{% endfor %}</tbody></table>
<p>Bekijk <a href="https://bakkerij.example/winkel">onze winkel</a>.</p>
</body></html>
"""


def _write(root: Path, name: str, files: dict[str, str]) -> None:
    folder = root / "campaigns" / name
    folder.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (folder / filename).write_text(text, encoding="utf-8")


def _factory(root: Path, template: str) -> MessageFactory:
    settings = make_settings("sqlite://", templates_dir=str(root))
    return MessageFactory(
        make_environment(settings),
        settings,
        CampaignContent("nov", "Nieuws", template, "newsletter"),
        TokenSigner(settings.require_secret_keys()).unsubscribe_token,
    )


@dataclass
class _Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


def _elements(html: str) -> list[_Element]:
    """Every element with its attributes and its own text (entities decoded)."""
    found: list[_Element] = []
    open_: list[_Element] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            element = _Element(tag, {k: v or "" for k, v in attrs})
            found.append(element)
            if tag not in {"br", "img", "hr", "meta", "link", "input"}:
                open_.append(element)

        def handle_endtag(self, tag: str) -> None:
            while open_ and open_.pop().tag != tag:
                pass

        def handle_data(self, data: str) -> None:
            if open_:
                open_[-1].text += data

    Reader(convert_charrefs=True).feed(html)
    return found


def _declarations(style: str) -> dict[str, str]:
    pairs = (d.split(":", 1) for d in style.split(";") if d.strip())
    return {k.strip(): v.strip() for k, v in pairs}


class _Recorder(HTMLParser):
    """Where an HTML parser puts things: <title> text, <p> attributes, text and comments."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.where: list[str] = []
        self.title_text = self.p_text = ""
        self.p_attrs: dict[str, str] = {}
        self.p_comments: list[str] = []
        self.comments: list[str] = []

    @classmethod
    def read(cls, html: str) -> _Recorder:
        recorder = cls()
        recorder.feed(html)
        recorder.close()
        return recorder

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.where.append(tag)
        if tag == "p":
            self.p_attrs = {k: v or "" for k, v in attrs}

    def handle_endtag(self, tag: str) -> None:
        if self.where and self.where[-1] == tag:
            self.where.pop()

    def handle_data(self, data: str) -> None:
        if self.where[-1:] == ["title"]:
            self.title_text += data
        elif self.where[-1:] == ["p"]:
            self.p_text += data

    def handle_comment(self, data: str) -> None:
        (self.p_comments if self.where[-1:] == ["p"] else self.comments).append(data)


def _parts(data: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def test_css_is_inlined_and_variables_are_still_substituted_and_escaped(tmp_path: Path) -> None:
    _write(tmp_path, "styled", {"nl.html": STYLED})
    recipient = Recipient(1, "a@v.example", '<b>Zoë</b> & "co"', None, "nl")
    _, html = _parts(_factory(tmp_path, "styled").render(recipient, basis="consent", now=NOW).data)
    # Read back with an HTML parser: the name is the attribute's value and the paragraph's text
    # (escaped, so no <b> element appears), and the paragraph carries both rules of its class.
    [cta] = [e for e in _elements(html) if e.tag == "p" and e.attrs.get("class") == "cta"]
    assert cta.attrs["title"] == '<b>Zoë</b> & "co"'
    assert cta.text == 'Beste <b>Zoë</b> & "co",'
    assert _declarations(cta.attrs["style"]) == {"color": "#333333", "font-weight": "bold"}
    assert not [e for e in _elements(html) if e.tag == "b"]
    assert [e.text for e in _elements(html) if e.tag == "td"] == ["brood & meer", "taart & meer"]
    assert "@media (max-width: 600px)" in html  # cannot be inlined: kept in a <style>
    assert ".cta" not in html  # the inlined rules are gone from <style>


def test_css_is_inlined_once_per_template_not_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path, "styled", {"nl.html": STYLED})
    calls: list[str] = []

    def counting(source: str, *, file: str) -> str | None:
        calls.append(file)
        return inline_template_css(source, file=file)

    monkeypatch.setattr(mailer.core.render, "inline_template_css", counting)
    factory = _factory(tmp_path, "styled")
    for n in range(5):
        factory.render(Recipient(n, f"p{n}@v.example", locale="nl"), basis="consent", now=NOW)
    assert calls == ["campaigns/styled/nl.html"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "<style>p { color: {{ colour }}; }</style><p>x</p>",
            "campaigns/bad/nl.html:1: a Jinja construct inside <style>: CSS is inlined once per "
            "template, so it cannot depend on variables; use fixed values",
        ),
        (
            '<style>p { color: red; }</style>\n<p {% if x %}class="a"{% endif %}>x</p>',
            "campaigns/bad/nl.html:2: a Jinja construct inside a tag: inside a tag, put Jinja "
            "only within a quoted attribute value",
        ),
        (
            '{% extends "base.html" %}<style>p { color: red; }</style>',
            "campaigns/bad/nl.html: uses {% extends %}; a campaign template with a <style> block "
            "must be self-contained, because its CSS is inlined from this file alone",
        ),
    ],
)
def test_templates_whose_css_cannot_be_inlined_safely_are_refused(
    tmp_path: Path, source: str, message: str
) -> None:
    _write(tmp_path, "bad", {"nl.html": source, "base.html": "<html></html>"})
    with pytest.raises(TemplateError) as caught:
        _factory(tmp_path, "bad")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "image",
    [
        '<img src="http://bakkerij.example/logo.png">',
        '<img src="/logo.png">',
        '<img src="//bakkerij.example/logo.png">',
        '<img srcset="https://b.example/a.png 1x, logo@2x.png 2x">',
        '<td background="http://b.example/bg.png"></td>',
        '<div style="background-image: url(http://b.example/bg.png)"></div>',
        '<style>body { background: url("img/bg.png"); }</style>',
    ],
)
def test_images_other_than_absolute_https_are_refused_naming_the_template(
    tmp_path: Path, image: str
) -> None:
    _write(tmp_path, "img", {"nl.html": f"<html><body>{image}<p>Hallo</p></body></html>"})
    with pytest.raises(TemplateError) as caught:
        _factory(tmp_path, "img")
    assert str(caught.value).startswith("campaigns/img/nl.html: links images by ")
    assert "images must be absolute https:// URLs" in str(caught.value)


def test_embedded_images_are_refused_as_before(tmp_path: Path) -> None:
    _write(tmp_path, "cid", {"nl.html": '<img src="cid:logo@x"><img src="data:image/png;x">'})
    with pytest.raises(TemplateError, match=r"^campaigns/cid/nl.html: embeds images \(cid:, data:"):
        _factory(tmp_path, "cid")


def test_an_image_url_from_a_variable_is_checked_in_each_message(tmp_path: Path) -> None:
    _write(tmp_path, "var", {"nl.html": '<p>Hallo</p><img src="{{ first_name }}" alt="">'})
    factory = _factory(tmp_path, "var")
    ok = factory.render(
        Recipient(1, "a@v.example", "https://b.example/a.png"), basis="consent", now=NOW
    )
    assert 'src="https://b.example/a.png"' in _parts(ok.data)[1]
    with pytest.raises(TemplateError, match='links images by "http://b.example/a.png"'):
        factory.render(
            Recipient(2, "b@v.example", "http://b.example/a.png"), basis="consent", now=NOW
        )


def test_https_images_are_accepted(tmp_path: Path) -> None:
    assert image_problems('<img src="HTTPS://b.example/a.png"><img src="https://b.example/b">') == (
        [],
        False,
    )


def test_a_campaign_without_a_text_template_gets_one_made_from_its_html(tmp_path: Path) -> None:
    _write(tmp_path, "htmlonly", {"nl.html": STYLED})
    factory = _factory(tmp_path, "htmlonly")
    message = factory.render(
        Recipient(1, "a@v.example", "Joël", locale="nl"), basis="consent", now=NOW
    )
    text, _ = _parts(message.data)
    assert text.startswith("Beste Joël,\n\nbrood & meer\n\ntaart & meer\n\n")
    assert "Bekijk onze winkel (https://bakkerij.example/winkel)." in text
    assert f"Afmelden kan altijd: {message.unsubscribe_url}" in text  # the footer, as always


def test_html_to_text_keeps_structure_and_links() -> None:
    html = """<html><head><title>T</title><style>p{}</style></head><body>
    <h1>Nieuws   van de
      bakker</h1><p>Regel een<br>regel twee &amp; drie</p>
    <ul><li>Brood</li><li>Taart met <a href="https://b.example/taart">slagroom</a></li></ul>
    <p><a href="https://b.example/">https://b.example/</a>
    <a href="mailto:info@b.example">info@b.example</a> <a href="#top">boven</a>
    <img src="https://b.example/a.png" alt="Logo"></p><hr><p>Einde</p></body></html>"""
    assert html_to_text(html) == (
        "Nieuws van de bakker\n\nRegel een\nregel twee & drie\n\n- Brood\n\n"
        "- Taart met slagroom (https://b.example/taart)\n\n"
        "https://b.example/ info@b.example boven [Logo]\n\n--------------------\n\nEinde\n"
    )


def test_html_to_text_wraps_long_paragraphs_but_never_a_url() -> None:
    url = "https://bakkerij.example/" + "a" * 90
    text = html_to_text(f"<p>{'woord ' * 30}<a href='{url}'>hier</a></p>")
    assert all(len(line) <= 76 or url in line for line in text.splitlines())
    assert f"({url})" in text


def test_placeholders_fit_their_html_context() -> None:
    source = '<title>{{ a }}</title><p x="{{ b }}">{{ c }}</p><!-- {{ d }} -->'
    protected = protect_jinja(source)
    seen = _Recorder.read(protected.html)
    # No Jinja left for the CSS inliner's HTML parser to move or escape, and every construct
    # stands where the parser keeps it: text of <title> (which cannot hold a comment), the
    # attribute's value, a comment of its own among the paragraph's children, and inside the
    # existing comment. Each placeholder is a different one.
    assert "{{" not in protected.html and "}}" not in protected.html
    title, attribute, in_paragraph, in_comment = (
        seen.title_text, seen.p_attrs["x"], seen.p_comments, seen.comments[-1].strip()
    )  # fmt: skip
    assert seen.p_text == "" and len(in_paragraph) == 1  # {{ c }} became a comment, no text
    placeholders = [title, attribute, in_paragraph[0], in_comment]
    assert all(placeholders) and len(set(placeholders)) == 4
    assert all("<" not in p and ">" not in p and '"' not in p for p in placeholders)
    assert protected.restore(protected.html, file="t") == source
