"""HTML that mail clients render: CSS inlined once per template, images by https, a text part.

Many clients (Outlook, older Gmail apps, most webmail in "basic" mode) drop `<style>` blocks,
so the CSS is written into `style=""` attributes. That is done once per campaign template, on
the template *source*, not per message: every Jinja construct is first swapped for a
placeholder the HTML parser leaves alone (an HTML comment between elements, a private-use
character inside an attribute value), css-inline rewrites the document, and the Jinja
constructs are put back. Autoescaping and substitution then happen at render time as usual.

The price is a few rules for templates with a `<style>` block (checked, with a clear error):
no Jinja inside `<style>`, Jinja inside a tag only within a quoted attribute value, and no
`extends`/`include`/`import` (the CSS of another file is not seen). Selectors are matched
against the template, so a class that a variable fills in is not styled.

All functions here are pure.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from html.parser import HTMLParser

import css_inline

from mailer.errors import TemplateError

__all__ = [
    "ProtectedSource",
    "html_to_text",
    "image_problems",
    "inline_template_css",
    "protect_jinja",
]

# Unicode private-use characters: never in a real template, kept as-is by the HTML parser.
_OPEN, _CLOSE = "\ue000", "\ue001"
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_PLACEHOLDER = re.compile(
    "<!--" + _OPEN + r"(\d+)" + _CLOSE + "-->|" + _OPEN + r"(\d+)" + _CLOSE + '(?:="")?'
)
_RAW_TEXT = ("style", "script", "title", "textarea")  # no comments inside these elements
_STYLE_BLOCK = re.compile(r"<style[\s>]", re.IGNORECASE)
_INCLUDES = re.compile(r"\{%-?\s*(extends|include|import|from)\b")
_INLINER = css_inline.CSSInliner(
    keep_at_rules=True,  # @media and @font-face cannot be inlined; they stay in a <style>
    load_remote_stylesheets=False,  # rendering does no network I/O
)


@dataclass(frozen=True, slots=True)
class ProtectedSource:
    """Template source with every Jinja construct replaced by a numbered placeholder."""

    html: str
    tokens: tuple[str, ...]
    # (line, where) of Jinja constructs in places CSS inlining cannot keep them.
    misplaced: tuple[tuple[int, str], ...]

    def restore(self, html: str, *, file: str) -> str:
        seen: list[int] = []

        def put_back(match: re.Match[str]) -> str:
            number = int(match.group(1) or match.group(2))
            seen.append(number)
            return self.tokens[number]

        restored = _PLACEHOLDER.sub(put_back, html)
        if sorted(seen) != list(range(len(self.tokens))) or _OPEN in restored:
            # A safety net: the HTML parser moved or dropped a Jinja construct.
            raise TemplateError(
                "cannot inline its CSS without changing its Jinja code; move the Jinja "
                "constructs out of unusual places (see docs/templates.md)",
                file=file,
            )
        return restored


class _Scanner:
    """Just enough of the HTML tokenizer to know where a Jinja construct sits."""

    def __init__(self) -> None:
        self.state = "text"  # text | tag | comment | decl | raw
        self.quote = ""
        self.tag = ""
        self.end_tag = False
        self.raw = ""

    def context(self) -> str:
        if self.state == "tag":
            return "attr" if self.quote else "tag"
        if self.state == "raw":
            return "style" if self.raw == "style" else "rawtext"
        return "comment" if self.state in ("comment", "decl") else "text"

    def feed(self, chunk: str) -> None:
        i, n = 0, len(chunk)
        while i < n:
            if self.state == "text":
                i = chunk.find("<", i)
                if i == -1:
                    return
                if chunk.startswith("<!--", i):
                    self.state, i = "comment", i + 4
                elif chunk[i + 1 : i + 2] in ("!", "?"):
                    self.state, i = "decl", i + 2
                else:
                    start = i + 2 if chunk[i + 1 : i + 2] == "/" else i + 1
                    j = start
                    while j < n and (chunk[j].isalnum() or chunk[j] in "-:"):
                        j += 1
                    if j == start:  # a lone "<" is text
                        i += 1
                        continue
                    self.state, self.quote = "tag", ""
                    self.tag, self.end_tag = chunk[start:j].lower(), start == i + 2
                    i = j
            elif self.state == "comment":
                end = chunk.find("-->", i)
                if end == -1:
                    return
                self.state, i = "text", end + 3
            elif self.state == "decl":
                end = chunk.find(">", i)
                if end == -1:
                    return
                self.state, i = "text", end + 1
            elif self.state == "raw":
                end = chunk.lower().find("</" + self.raw, i)
                if end == -1:
                    return
                self.state, self.quote, self.tag, self.end_tag = "tag", "", self.raw, True
                i = end + 2 + len(self.raw)
            else:  # inside a tag
                c = chunk[i]
                if self.quote:
                    if c == self.quote:
                        self.quote = ""
                elif c in "\"'":
                    self.quote = c
                elif c == ">":
                    opens_raw = not self.end_tag and self.tag in _RAW_TEXT
                    self.state, self.raw = ("raw", self.tag) if opens_raw else ("text", "")
                i += 1


def protect_jinja(source: str) -> ProtectedSource:
    """Swap Jinja constructs for placeholders fitting their HTML context."""
    if _OPEN in source or _CLOSE in source:
        raise TemplateError("contains Unicode private-use characters U+E000/U+E001")
    scanner = _Scanner()
    out: list[str] = []
    tokens: list[str] = []
    misplaced: list[tuple[int, str]] = []
    position = 0
    for match in _JINJA.finditer(source):
        literal = source[position : match.start()]
        scanner.feed(literal)
        out.append(literal)
        number = len(tokens)
        tokens.append(match.group(0))
        line = source.count("\n", 0, match.start()) + 1
        context = scanner.context()
        if context == "text":
            out.append(f"<!--{_OPEN}{number}{_CLOSE}-->")
        else:
            # In an attribute value, a comment, <title>: a bare placeholder is kept verbatim.
            if context in ("tag", "style"):
                where = "inside <style>" if context == "style" else "inside a tag"
                misplaced.append((line, where))
            out.append(f"{_OPEN}{number}{_CLOSE}")
        position = match.end()
    out.append(source[position:])
    return ProtectedSource("".join(out), tuple(tokens), tuple(misplaced))


def inline_template_css(source: str, *, file: str) -> str | None:
    """The template source with its `<style>` CSS inlined; None if it has no `<style>`."""
    if not _STYLE_BLOCK.search(source):
        return None
    if found := _INCLUDES.search(source):
        raise TemplateError(
            f"uses {{% {found.group(1)} %}}; a campaign template with a <style> block must be "
            "self-contained, because its CSS is inlined from this file alone",
            file=file,
        )
    protected = protect_jinja(source)
    if protected.misplaced:
        line, where = protected.misplaced[0]
        hint = (
            "CSS is inlined once per template, so it cannot depend on variables; use fixed values"
            if where == "inside <style>"
            else "inside a tag, put Jinja only within a quoted attribute value"
        )
        raise TemplateError(f"a Jinja construct {where}: {hint}", file=file, line=line)
    try:
        inlined = _INLINER.inline(protected.html)
    except ValueError as exc:  # css_inline.InlineError derives from ValueError
        raise TemplateError(f"its CSS cannot be inlined: {exc}", file=file) from exc
    return protected.restore(inlined, file=file)


# -- images --------------------------------------------------------------------------------

_IMAGE_ATTRIBUTES = {
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "input": ("src",),
    "image": ("href", "xlink:href"),
    "video": ("poster",),
}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.IGNORECASE | re.DOTALL)


class _ImageFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = _IMAGE_ATTRIBUTES.get(tag, ())
        for name, value in attrs:
            if value is None:
                continue
            if name in wanted:
                if name == "srcset":
                    self.urls.extend(c.split()[0] for c in value.split(",") if c.strip())
                else:
                    self.urls.append(value.strip())
            elif name == "background":  # <td background="..."> (old Outlook idiom)
                self.urls.append(value.strip())
            elif name == "style":
                self.urls.extend(m.group(2).strip() for m in _CSS_URL.finditer(value))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls.extend(m.group(2).strip() for m in _CSS_URL.finditer(data))


def image_problems(html: str) -> tuple[list[str], bool]:
    """(image URLs that are not absolute https, whether some URL comes from a variable).

    Rule 5 (DESIGN.md): images are linked, not embedded; and only by https, since clients block
    or flag http: images and a relative URL resolves nowhere in a mailbox. Works on rendered
    HTML and on `protect_jinja` output, where a placeholder marks a URL set by a variable.
    """
    finder = _ImageFinder()
    finder.feed(html)
    finder.close()
    bad: list[str] = []
    dynamic = False
    for url in finder.urls:
        if _OPEN in url:
            dynamic = dynamic or not url.lower().startswith("https://")
            continue
        if not url.lower().startswith("https://") or len(url) <= len("https://"):
            bad.append(url)
    return bad, dynamic


# -- text part -----------------------------------------------------------------------------

_BLOCKS = frozenset(
    "address article aside blockquote center dd div dl dt figure footer form h1 h2 h3 h4 h5 "
    "h6 header hr li main nav ol p pre section table tbody td th thead tr ul".split()
)
_SKIP = frozenset(("head", "style", "script", "title", "template"))
_LINE, _PARAGRAPH = "\x01", "\x02"  # break markers, resolved after whitespace is collapsed
_SPACE = re.compile(r"[ \t\r\n\f]+")
_BREAKS = re.compile(" ?[\x01\x02][ \x01\x02]*")


class _TextMaker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._links: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "br":
            self.parts.append(_LINE)
        elif tag in _BLOCKS:
            self.parts.append(_PARAGRAPH)
            if tag == "li":
                self.parts.append("- ")
            elif tag == "hr":
                self.parts.extend(("-" * 20, _PARAGRAPH))
        elif tag == "a":
            self._links.append(((dict(attrs).get("href") or "").strip(), len(self.parts)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.parts.append(f"[{alt}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCKS:
            self.parts.append(_PARAGRAPH)
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            text = _SPACE.sub(" ", "".join(self.parts[start:])).strip()
            shown = href.removeprefix("mailto:")
            # Links are kept as "text (url)"; a bare URL or a page anchor is not repeated.
            if href and not href.startswith("#") and text not in (href, shown):
                self.parts.append(f" ({shown})" if text else shown)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str, *, width: int = 76) -> str:
    """A plain-text rendering of an HTML mail: paragraphs, list items, links as text (url)."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    flat = _SPACE.sub(" ", "".join(maker.parts))
    flat = _BREAKS.sub(lambda m: "\n\n" if _PARAGRAPH in m.group(0) else "\n", flat)
    lines: list[str] = []
    for raw in flat.strip().split("\n"):
        raw = raw.strip()
        indent = "  " if raw.startswith("- ") else ""
        # URLs are never split: a broken link is worse than a long line (QP keeps it legal).
        wrapped = textwrap.wrap(
            raw, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
        )
        lines.extend(wrapped or [""])
    return "\n".join(lines).strip() + "\n"
