"""Model cards as HTML: Markdown (CommonMark + tables + strikethrough, fenced code highlighted)
rendered by markdown-it-py, then sanitized by nh3 (ammonia) whatever the Markdown let through.

A card is written by whoever can push, and read by everyone who can read the model, so the
output must be inert: no script or style elements, no event-handler attributes, no javascript:
(or any other non-web) links, and images only from the repository itself or over https (a
plain-http or data: image would leak the reader's address or smuggle content). Relative links
and images are made to point into the repository at the rendered commit.
"""

import posixpath
from collections import OrderedDict
from threading import Lock

import nh3
from markdown_it import MarkdownIt
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.util import ClassNotFound

from modelrepo.models.card import card_body

HIGHLIGHT_MAX = 100_000  # larger code is shown plain: highlighting is the slow part of a page
_TAGS = nh3.ALLOWED_TAGS | {"details", "summary", "del", "s"}
_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES}
for _tag in ("code", "span", "pre", "div"):
    _ATTRIBUTES[_tag] = set(_ATTRIBUTES.get(_tag, set())) | {"class"}
for _tag in ("th", "td"):
    _ATTRIBUTES[_tag] = set(_ATTRIBUTES.get(_tag, set())) | {"align", "style"}
_FORMATTER = HtmlFormatter(nowrap=True)


def highlight_code(code: str, *, language: str | None = None, filename: str | None = None) -> str | None:
    """Pygments HTML (escaped, class-based spans) or None when no lexer fits or the code is big."""
    if len(code) > HIGHLIGHT_MAX:
        return None
    try:
        if language:
            lexer = get_lexer_by_name(language)
        elif filename:
            lexer = get_lexer_for_filename(filename, code)
        else:
            return None
    except ClassNotFound:
        return None
    return pygments_highlight(code, lexer, _FORMATTER)


def _fence(code: str, language: str, _attrs: str) -> str:
    return highlight_code(code, language=language or None) or ""


_MD = MarkdownIt("commonmark", {"html": True, "highlight": _fence}).enable(["table", "strikethrough"])


def _has_scheme(url: str) -> bool:
    head = url.split("/", 1)[0]
    return ":" in head


def _in_repo(url: str, base: str) -> str | None:
    """A repository-relative URL made absolute under ``base`` (None if it climbs out)."""
    path, _, fragment = url.partition("#")
    path = posixpath.normpath(path.removeprefix("./")) if path else ""
    if path.startswith("..") or path.startswith("/"):
        return None
    return f"{base}/{path}" + (f"#{fragment}" if fragment else "") if path and path != "." else url


def render_markdown(text: str, *, files_base: str, raw_base: str) -> str:
    """Sanitized HTML of a README's body. ``files_base`` prefixes relative links (the blob view),
    ``raw_base`` relative images (the download route)."""

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            if value.startswith("https://"):
                return value
            if value.startswith("//") or _has_scheme(value):
                return None  # http:, data:, protocol-relative: not shown
            return _in_repo(value, raw_base)
        if tag == "a" and attribute == "href" and not value.startswith(("#", "/")) and not _has_scheme(value):
            return _in_repo(value, files_base)
        return value

    html = _MD.render(card_body(text))
    return nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES, attribute_filter=attribute_filter,
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
                     filter_style_properties={"text-align"})


class CardCache:
    """Rendered cards by (model, commit): a commit never changes, so neither does its card."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = Lock()

    def get(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            html = self._items.get(key)
            if html is not None:
                self._items.move_to_end(key)
            return html

    def put(self, key: tuple[str, str], html: str) -> None:
        with self._lock:
            self._items[key] = html
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
