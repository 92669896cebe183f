"""Model card rendering: what nh3 must take out of whatever Markdown and HTML a card contains."""

import pytest

from modelrepo.ui.markdown import CardCache, render_markdown


def render(text: str) -> str:
    return render_markdown(text, files_base="/ns/m/blob/abc", raw_base="/ns/m/resolve/abc")


@pytest.mark.parametrize("hostile", [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<a href=\"javascript:alert(1)\">x</a>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "<svg onload=alert(1)></svg>",
    "<iframe src=\"https://evil.example\"></iframe>",
    "<style>body{display:none}</style>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "<form action=\"https://evil.example\"><input name=a></form>",
    "<object data=\"x.swf\"></object>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
])
def test_hostile_markup_is_made_inert(hostile):
    html = render(f"---\nlicense: mit\n---\n# Card\n\n{hostile}\n").lower()
    # Left as text is fine ("[x](javascript:...)" that markdown refused to link); as markup, never.
    for bad in ("<script", " onerror=", " onload=", 'href="javascript', "href=javascript", "<iframe", "<style",
                "<form", "<input", "<object", "<svg", " style="):
        assert bad not in html, (hostile, html)


def test_tables_code_and_front_matter():
    html = render("---\nlicense: mit\n---\n# Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\n```\n")
    assert "license: mit" not in html  # front matter is metadata, not prose
    assert "<table>" in html and "<td>1</td>" in html
    assert "<pre><code" in html and "<span" in html  # highlighted


def test_images_only_from_the_repository_or_https_and_relative_links_point_into_it():
    html = render("![a](images/a.png) ![b](https://cdn.example/b.png) ![c](http://cdn.example/c.png) "
                  "![d](data:image/png;base64,AAAA) ![e](//cdn.example/e.png) ![f](../../etc/passwd) "
                  "[cfg](config.json) [site](https://example.org) [top](#usage)")
    assert 'src="/ns/m/resolve/abc/images/a.png"' in html
    assert 'src="https://cdn.example/b.png"' in html
    assert "http://cdn.example" not in html and "data:" not in html and "//cdn.example/e.png" not in html
    assert "etc/passwd" not in html
    assert 'href="/ns/m/blob/abc/config.json"' in html and 'href="https://example.org"' in html
    assert 'href="#usage"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_card_cache_is_bounded():
    cache = CardCache(size=2)
    for i in range(3):
        cache.put(("m", str(i)), f"<p>{i}</p>")
    assert cache.get(("m", "0")) is None and cache.get(("m", "2")) == "<p>2</p>"
