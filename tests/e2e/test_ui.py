"""The web UI in a real browser: Playwright driving Debian's Chromium against a real daemon, with
the real git and git-lfs clients on the other side of every journey."""

import hashlib
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from ..helpers import MODELREPO, http, operator_env, start_daemon

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed"),
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
PASSWORDS = {"alice": "alice-correct-horse", "bob": "bob-battery-staple"}
CARD = ("---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-classification\n"
        "datasets: [imdb]\nbase_model: google-bert/bert-base-uncased\ntags: [nlp, sentiment]\n---\n"
        "# Tiny BERT\n\nA tiny BERT fine-tuned for sentiment, for tests.\n\n"
        "| split | accuracy |\n|---|---|\n| test | 0.93 |\n\n"
        "```python\nfrom transformers import pipeline\nclassify = pipeline('text-classification')\n```\n")
HOSTILE_CARD = ("---\nlicense: mit\n---\n# Hostile card\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\nx = 1\n```\n\n"
        "<script>window.__pwned = 'script'</script>\n\n"
        "<img src=\"missing.png\" onerror=\"window.__pwned = 'onerror'\">\n\n"
        "<img id=\"tracker\" src=\"http://tracker.invalid/pixel.png\">\n\n"
        "[markdown link](javascript:window.__pwned='md-link') and "
        "<a id=\"rawlink\" href=\"javascript:window.__pwned='html-link'\" onclick=\"window.__pwned='onclick'\">raw link</a>\n")
INCOMPLETE_CARD = "---\nlicense: apache-2.0\n---\n# Tiny BERT, early\n\nNo task yet.\n"
WEIGHTS = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit


@pytest.fixture(scope="module")
def ui():
    d = start_daemon()
    d.user("alice")
    d.user("bob")
    d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    d.ok("POST", "/api/v1/namespaces", body={"name": "other"})
    d.ok("PUT", "/api/v1/namespaces/acme/members/alice", body={"role": "admin"})
    d.ok("PUT", "/api/v1/namespaces/other/members/bob", body={"role": "admin"})
    for user, password in PASSWORDS.items():
        assert d.api("PUT", f"/api/v1/users/{user}/password", token=user, body={"password": password}).status == 204
    for name, visibility in (("bert", "public"), ("secret", "private"), ("team", "shared"), ("hostile", "public")):
        d.ok("POST", "/api/v1/models", token="alice", body={"namespace": "acme", "name": name, "visibility": visibility})
    d.ok("POST", "/api/v1/models", token="bob", body={"namespace": "other", "name": "theirs"})
    yield d
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, d.log()[-4000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def pushed(ui, tmp_path_factory):
    """acme/bert: v0 with an incomplete card, then the full card (with hostile HTML in it), a
    config and LFS weights on main."""
    from ..helpers import Git

    root = tmp_path_factory.mktemp("ui")
    git = Git(root / "home")
    work = git.new_repo(root / "bert", {"README.md": INCOMPLETE_CARD})
    git.run("tag", "-a", "v0", "-m", "early release", cwd=work)
    git.run("lfs", "track", "*.safetensors", cwd=work)
    git.commit(work, {"README.md": CARD, "config.json": '{"model_type": "bert"}\n', "model.safetensors": WEIGHTS,
                      "docs/notes.txt": "notes\n"}, "full card and weights")
    git.run("push", "-q", ui.git_url("acme/bert.git", "alice"), "main", "v0", cwd=work)
    hostile = git.new_repo(root / "hostile", {"README.md": HOSTILE_CARD})
    git.run("push", "-q", ui.git_url("acme/hostile.git", "alice"), "main", cwd=hostile)
    return git


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def sign_in(page, d, user: str, password: str | None = None) -> None:
    page.goto(f"{d.url}/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password or PASSWORDS[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def main_text(page) -> str:
    return page.locator("main").inner_text()


def test_sign_in_and_explore_lists_what_the_viewer_may_read(ui, page):
    d = ui
    page.goto(d.url + "/")
    assert page.title().startswith("Models")
    listed = set(page.locator("a.model-name").all_inner_texts())
    assert listed == {"acme/bert", "acme/hostile"}  # anonymous: public only

    sign_in(page, d, "alice", "a-wrong-password!")
    assert "Wrong username or password." in main_text(page)
    sign_in(page, d, "alice")
    assert page.url == d.url + "/"
    assert page.locator("header .who").inner_text() == "alice"
    assert set(page.locator("a.model-name").all_inner_texts()) == {"acme/bert", "acme/hostile", "acme/secret", "acme/team"}

    page.context.clear_cookies()
    sign_in(page, d, "bob")
    assert set(page.locator("a.model-name").all_inner_texts()) == {"acme/bert", "acme/hostile", "acme/team", "other/theirs"}
    page.get_by_label("Search models").fill("theirs")
    page.get_by_label("Search models").press("Enter")
    page.wait_for_url(re.compile(r".*\?q=theirs"))
    assert page.locator("a.model-name").all_inner_texts() == ["other/theirs"]


def test_explore_filters(ui, pushed, page):
    d = ui
    for query, expected in (("license=apache-2.0", ["acme/bert"]), ("library=transformers", ["acme/bert"]),
                            ("task=text-classification", ["acme/bert"]), ("license=mit", ["acme/hostile"]),
                            ("namespace=other", []), ("q=hostile", ["acme/hostile"])):
        page.goto(f"{d.url}/?{query}")
        assert page.locator("a.model-name").all_inner_texts() == expected, query
    page.goto(f"{d.url}/acme")
    assert set(page.locator("a.model-name").all_inner_texts()) == {"acme/bert", "acme/hostile"}
    assert page.locator("main").get_by_text("Members").count() == 0  # members are for members
    # A namespace with nothing the visitor may read is as missing as one that does not exist.
    page.goto(f"{d.url}/no-such-namespace")
    missing = main_text(page)
    response = page.goto(f"{d.url}/other")
    assert response.status == 404 and main_text(page) == missing


def test_new_model_and_members_from_the_ui(ui, page):
    d = ui
    sign_in(page, d, "alice")
    page.get_by_role("link", name="New model").click()
    page.get_by_label("Namespace").select_option("acme")
    page.get_by_label("Model name").fill("fresh")
    page.get_by_label("Description").fill("Made in the browser")
    page.get_by_label("Visibility").select_option("private")
    page.get_by_role("button", name="Create model").click()
    assert page.url == f"{d.url}/acme/fresh"
    assert f"git clone {d.url}/acme/fresh.git" in main_text(page)
    assert ui.ok("GET", "/api/v1/models/acme/fresh", token="alice")["description"] == "Made in the browser"
    page.get_by_role("link", name="New model").click()
    page.get_by_label("Model name").fill("fresh")
    page.get_by_role("button", name="Create model").click()
    assert "already exists" in page.locator(".error-msg").inner_text()

    assert ui.api("GET", "/api/v1/models/acme/fresh", token="bob").status == 404
    page.goto(f"{d.url}/acme")
    page.get_by_label("User").fill("bob")
    page.get_by_label("Role").select_option("reader")
    page.get_by_role("button", name="Set role").click()
    assert "bob" in page.locator("aside table").inner_text()
    assert ui.api("GET", "/api/v1/models/acme/fresh", token="bob").status == 200
    page.get_by_label("User").fill("bob")
    page.get_by_label("Role").select_option("remove")
    page.get_by_role("button", name="Set role").click()
    assert "bob" not in page.locator("aside table").inner_text()
    assert ui.api("GET", "/api/v1/models/acme/fresh", token="bob").status == 404

    page.goto(f"{d.url}/acme/fresh/settings")
    page.get_by_label("Description").fill("Edited in the browser")
    page.get_by_label("Visibility").select_option("shared")
    page.get_by_role("button", name="Save").click()
    assert "Saved." in main_text(page)
    info = ui.ok("GET", "/api/v1/models/acme/fresh", token="alice")
    assert (info["description"], info["visibility"]) == ("Edited in the browser", "shared")
    page.get_by_label("Type the model name to confirm").fill("not-it")
    page.get_by_role("button", name="Delete model").click()
    assert "Type the model name (fresh)" in page.locator(".error-msg").inner_text()
    page.get_by_label("Type the model name to confirm").fill("fresh")
    page.get_by_role("button", name="Delete model").click()
    assert page.url == f"{d.url}/acme"
    assert ui.api("GET", "/api/v1/models/acme/fresh", token="alice").status == 404


def test_card_is_rendered_sanitized_and_no_script_runs(ui, pushed, page):
    d = ui
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{d.url}/acme/hostile")
    card = page.locator("article.card")
    assert card.locator("h1").inner_text() == "Hostile card"
    assert card.locator("table td").all_inner_texts() == ["1", "2"]
    assert card.locator("pre code span").count() > 0  # the fenced code is highlighted
    html = card.inner_html()
    assert "<script" not in html and "onerror" not in html and "onclick" not in html
    assert 'href="javascript' not in html  # the markdown one stays text, the HTML one loses its href
    sources = [img.get_attribute("src") for img in card.locator("img").all()]
    assert sources[0].startswith("/acme/hostile/resolve/") and sources[0].endswith("/missing.png")
    assert sources[1] is None  # the plain-http tracker lost its src
    card.get_by_text("raw link").click()
    card.get_by_text("markdown link").click()
    response = page.goto(f"{d.url}/acme/hostile")
    assert page.evaluate("window.__pwned") is None and dialogs == []
    # Belt and braces: even markup that slipped through could not run, the page allows no script.
    assert "default-src 'none'" in response.headers["content-security-policy"]

    page.goto(f"{d.url}/acme/bert")
    card = page.locator("article.card")
    assert card.locator("h1").inner_text() == "Tiny BERT"
    assert card.locator("table td").all_inner_texts() == ["test", "0.93"]
    sidebar = page.locator("aside.sidebar")
    text = sidebar.inner_text()
    for expected in ("apache-2.0", "transformers", "text-classification", "imdb", "google-bert/bert-base-uncased",
                     "sentiment", f"git clone {d.url}/acme/bert.git", 'from_pretrained("acme/bert")', "1.0 MB"):
        assert expected in text, expected


def test_files_page_shows_lfs_weights_and_download_gives_the_verified_bytes(ui, pushed, page):
    d = ui
    page.goto(f"{d.url}/acme/bert")
    page.get_by_role("link", name="Files").click()
    row = page.locator("table.files tr", has_text="model.safetensors")
    assert row.locator(".badge.lfs").inner_text() == "LFS"
    assert "1.0 MB" in row.inner_text()
    assert page.locator("table.files tr", has_text="config.json").locator(".badge.lfs").count() == 0
    with page.expect_download() as info:
        row.get_by_role("link", name="Download model.safetensors").click()
    data = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(WEIGHTS).hexdigest()

    page.get_by_role("link", name="docs/", exact=True).click()
    page.get_by_role("link", name="notes.txt", exact=True).click()
    assert page.locator("pre.code").inner_text().strip() == "notes"
    page.goto(f"{d.url}/acme/bert/blob/main/model.safetensors")
    assert "stored with Git LFS" in main_text(page) and hashlib.sha256(WEIGHTS).hexdigest() in main_text(page)
    page.goto(f"{d.url}/acme/bert/commits/main")
    page.get_by_role("link", name="full card and weights").click()
    changed = page.locator("main table").inner_text()
    assert "model.safetensors" in changed and "config.json" in changed and "added" in changed


def test_tag_from_the_ui_deploy_gate_and_delete_refused(ui, pushed, page):
    d = ui
    hook = ui.ok("POST", "/api/v1/models/acme/bert/webhooks",
                 body={"url": "http://127.0.0.1:9/unreachable", "secret": "s", "events": ["tag.created"]})
    sign_in(page, d, "alice")
    page.goto(f"{d.url}/acme/bert/tags")
    assert "lacks required field 'library_name'" in page.locator("table.releases").inner_text()  # v0's card state
    page.get_by_label("Tag name").fill("v1")
    page.get_by_label("Revision").fill("main")
    page.get_by_label("Message").fill("First release from the browser")
    page.get_by_role("button", name="Create tag").click()
    assert "Tag v1 created." in main_text(page)
    remote = pushed.out("ls-remote", "--tags", ui.git_url("acme/bert.git", "alice"))
    assert "refs/tags/v1" in remote and "refs/tags/v0" in remote
    # Tags are immutable: the same name again is refused in words, nothing moves.
    page.get_by_label("Tag name").fill("v1")
    page.get_by_label("Message").fill("again")
    page.get_by_role("button", name="Create tag").click()
    assert page.locator(".error-msg").inner_text() != ""

    page.get_by_role("link", name="Deployments").click()
    page.get_by_label("Deployment name").fill("prod")
    page.get_by_label("Tag", exact=True).select_option("v0")
    page.get_by_role("button", name="Deploy").click()
    error = page.locator(".error-msg").inner_text()
    assert "cannot deploy" in error and "lacks required field 'pipeline_tag'" in error
    assert ui.ok("GET", "/api/v1/models/acme/bert/deployments", token="alice") == []
    page.get_by_label("Deployment name").fill("prod")
    page.get_by_label("Tag", exact=True).select_option("v1")
    page.get_by_role("button", name="Deploy").click()
    assert "Deployment requested" in main_text(page)
    assert "requested" in page.locator("main table").inner_text()

    page.get_by_role("link", name="Releases").click()
    assert "pinned by deployment prod" in page.locator("table.releases").inner_text()

    page.get_by_role("link", name="Settings").click()
    assert "http://127.0.0.1:9/unreachable" in main_text(page)
    deliveries = ui.ok("GET", f"/api/v1/models/acme/bert/webhooks/{hook['id']}/deliveries")
    assert [x["event"] for x in deliveries] == ["tag.created"]
    page.locator("section.hook").get_by_role("button", name="Redeliver").click()
    assert "Delivery queued again." in main_text(page)
    page.get_by_label("Type the model name to confirm").fill("bert")
    page.get_by_role("button", name="Delete model").click()
    assert "used by deployments: prod" in page.locator(".error-msg").inner_text()
    assert ui.api("GET", "/api/v1/models/acme/bert", token="alice").status == 200

    # The README's screenshot: the model page as its admin sees it, with its first release.
    page.get_by_role("link", name="Model card").click()
    assert "v1" in page.locator("aside.sidebar").inner_text()
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "web-ui.png"))


def test_token_created_in_the_ui_clones(ui, pushed, page, tmp_path):
    d = ui
    sign_in(page, d, "alice")
    page.get_by_role("link", name="Tokens").click()
    page.get_by_label("Token name").fill("laptop")
    page.get_by_label("write").check()
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("mr_")
    assert "laptop" in page.locator("main table").inner_text()
    clone = tmp_path / "clone"
    pushed.run("clone", "-q", f"http://alice:{token}@127.0.0.1:{d.port}/acme/bert.git", str(clone))
    assert (clone / "model.safetensors").read_bytes() == WEIGHTS
    private = f"http://alice:{token}@127.0.0.1:{d.port}/acme/secret.git"
    assert pushed.run("ls-remote", private, check=False).returncode == 0
    page.goto(f"{d.url}/settings/tokens")
    assert token not in page.content()  # shown once
    page.get_by_role("button", name="Revoke token laptop").click()
    assert "laptop" not in page.locator("main table").inner_text()
    assert pushed.run("ls-remote", private, check=False).returncode != 0


def test_another_tenant_and_anonymous_get_the_missing_model_page(ui, page):
    d = ui
    page.goto(f"{d.url}/acme/no-such-model")
    missing = main_text(page)
    assert "404" in missing
    for url in ("/acme/secret", "/acme/secret/tree/main", "/acme/secret/tags", "/acme/secret/deployments"):
        response = page.goto(d.url + url)
        assert response.status == 404 and main_text(page) == missing, url
    sign_in(page, d, "bob")
    for url in ("/acme/secret", "/acme/secret/settings", "/acme/secret/commits/main"):
        response = page.goto(d.url + url)
        assert response.status == 404 and main_text(page) == missing, url
    assert page.goto(f"{d.url}/acme/team").status == 200  # shared: any signed-in user reads it


def test_form_post_without_csrf_token_is_refused_and_changes_nothing(ui, pushed, page):
    d = ui
    sign_in(page, d, "alice")
    page.goto(f"{d.url}/acme/bert/tags")
    for form in ({"tag": "sneaky", "revision": "main", "message": "x"},
                 {"tag": "sneaky", "revision": "main", "message": "x", "csrf_token": "0" * 64}):
        r = page.request.post(f"{d.url}/acme/bert/tags", form=form, max_redirects=0)
        assert r.status == 403 and "CSRF" in r.text()
    r = page.request.post(f"{d.url}/acme/bert/settings/delete", form={"confirm": "bert"}, max_redirects=0)
    assert r.status == 403
    assert "sneaky" not in pushed.out("ls-remote", "--tags", ui.git_url("acme/bert.git", "alice"))
    assert ui.api("GET", "/api/v1/models/acme/bert", token="alice").status == 200


def test_sign_out_ends_the_session_and_password_change_too(ui, browser, page):
    d = ui
    sign_in(page, d, "bob")
    cookie = next(c for c in page.context.cookies() if c["name"] == "mr_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    assert page.locator("header").get_by_role("link", name="Sign in").count() == 1
    replay = browser.new_context()
    replay.add_cookies([{**{k: cookie[k] for k in ("name", "value", "domain", "path")}}])
    other = replay.new_page()
    other.goto(f"{d.url}/settings/tokens")
    assert "/login" in other.url  # the old cookie is worth nothing now

    sign_in(other, d, "bob")
    other.goto(f"{d.url}/settings/tokens")
    assert other.title().startswith("Access tokens")
    new = "bob-a-brand-new-password"
    assert d.api("PUT", "/api/v1/users/bob/password", token="bob", body={"password": new}).status == 204
    other.goto(f"{d.url}/settings/tokens")
    assert "/login" in other.url
    sign_in(other, d, "bob", new)
    assert other.locator("header .who").inner_text() == "bob"
    replay.close()
    PASSWORDS["bob"] = new


def test_password_api_and_cli(ui):
    d = ui
    assert d.api("PUT", "/api/v1/users/alice/password", token="alice", body={"password": "short"}).status == 400
    assert d.api("PUT", "/api/v1/users/bob/password", token="alice", body={"password": "x" * 20}).status == 404
    assert d.api("PUT", "/api/v1/users/alice/password", token=None, body={"password": "x" * 20}).status == 401
    d.ok("POST", "/api/v1/users", body={"name": "carol"})
    proc = subprocess.run([MODELREPO, "user", "set-password", "carol", "--data", str(d.data)],
                          input=b"carol-from-the-cli\n", capture_output=True, timeout=60, env=operator_env(d.data))
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([MODELREPO, "user", "set-password", "carol", "--data", str(d.data)],
                          input=b"short\n", capture_output=True, timeout=60, env=operator_env(d.data))
    assert proc.returncode == 1 and b"at least 12 characters" in proc.stderr
    jar = _Browserless(d)
    assert jar.sign_in("carol", "carol-from-the-cli") == 303


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class _Browserless:
    """Sign-in over plain HTTP (for the limiter test, where a browser adds nothing)."""

    def __init__(self, d) -> None:
        self.d = d
        r = http("GET", d.url + "/login")
        self.cookie = r.headers["Set-Cookie"].split(";", 1)[0]
        self.csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', r.body.decode()).group(1)

    def sign_in(self, user: str, password: str) -> int:
        """The status of POST /login (303 on success: redirects are not followed)."""
        body = urlencode({"csrf_token": self.csrf, "username": user, "password": password}).encode()
        req = urllib.request.Request(self.d.url + "/login", data=body, method="POST", headers={
            "Cookie": self.cookie, "Content-Type": "application/x-www-form-urlencoded"})

        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code


def test_ui_routes_leave_the_other_doors_alone(ui, pushed):
    d = ui
    for path in ("/api/nothing", "/api/v1/nothing", "/healthz/x", "/acme/bert/info/lfs/nothing"):
        r = http("GET", d.url + path, headers={"Accept": "text/html"})
        assert r.status == 404 and r.headers["Content-Type"].startswith(("application/json",
                                                                         "application/vnd.git-lfs+json")), path
    assert http("GET", d.url + "/api/models/acme/bert").json()["id"] == "acme/bert"  # Hub
    assert http("GET", d.url + "/api/v1/models/acme/bert").json()["id"] == "acme/bert"  # REST
    r = http("GET", d.url + "/acme/bert/resolve/main/config.json", headers={"Accept": "text/html"})
    assert r.status == 200 and r.body == b'{"model_type": "bert"}\n'
    r = http("GET", d.url + "/acme/bert.git/info/refs?service=git-upload-pack")
    assert r.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
    r = http("GET", d.url + "/acme/bert")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "mr_session" not in r.headers.get("Set-Cookie", "")


def test_failed_sign_ins_count_against_the_brute_force_guard():
    d = start_daemon(extra_env={"MODELREPO_AUTH__MAX_FAILURES": "3", "MODELREPO_AUTH__ALLOW_ANONYMOUS_READ": "false"})
    try:
        # Without anonymous reads the pages send visitors to sign in; the APIs still answer 401.
        assert http("GET", d.url + "/api/v1/models").status == 401
        r = http("GET", d.url + "/")
        assert r.status == 200 and b"<title>Sign in" in r.body
        d.user("eve")
        assert d.api("PUT", "/api/v1/users/eve/password", token="eve", body={"password": "eve-long-password"}).status == 204
        jar = _Browserless(d)
        assert [jar.sign_in("eve", f"wrong-password-{i}") for i in range(3)] == [401, 401, 401]
        assert jar.sign_in("eve", "eve-long-password") == 429  # blocked, even with the right password
        assert d.api("GET", "/api/v1/user", token="mr_not-a-token").status == 429  # one guard for every door
    finally:
        d.stop(signal.SIGTERM)
        shutil.rmtree(d.data.parent, ignore_errors=True)
