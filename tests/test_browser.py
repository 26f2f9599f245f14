"""The built book, opened page by page in a real browser (headless Chromium from Debian, no downloads).

For every page: no JavaScript errors, all maths typeset by the bundled MathJax (no raw \\( or $$ left in the
text), every image loaded, every internal link and anchor resolves. A screenshot of each chapter's first
screen goes to _build/screenshots/. Needs `bash .ci/build-book` first; skipped (or, with
TNB_REQUIRE_BROWSER=1 as in CI, failed) when the book or the browser is missing.
"""
import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _unavailable() -> str | None:
    if not (HTML / "index.html").exists():
        return "the book is not built (run bash .ci/build-book)"
    if not (CHROMIUM and CHROMEDRIVER):
        return "headless Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


reason = _unavailable()
if reason and os.environ.get("TNB_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"browser test required but {reason}")
pytestmark = pytest.mark.skipif(reason is not None, reason=reason or "")

def _pages() -> list[str]:
    "Every page of the book, except Sphinx's generated search and index pages and redirect stubs."
    pages = []
    for path in sorted(HTML.rglob("*.html")) if HTML.exists() else []:
        rel = str(path.relative_to(HTML))
        if rel.startswith(("_", "genindex", "search")) or 'http-equiv="refresh"' in path.read_text(encoding="utf-8"):
            continue
        pages.append(rel)
    return pages


PAGES = _pages()


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => done(true)).catch(e => done(String(e)));
} else { done(false); }
"""

PAGE_FACTS = """
const text = (() => {
  const body = document.querySelector('main') || document.body;
  const clone = body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
  return clone.innerText;
})();
return {
  rawMath: (text.match(/\\\\\\(|\\\\\\[|\\$\\$/g) || []).length,
  typeset: document.querySelectorAll('mjx-container').length,
  brokenImages: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
};
"""


def _target_exists(page: str, href: str) -> str | None:
    "None if an internal link on `page` (the path the browser shows) resolves, else what is wrong."
    url = urlparse(urljoin(f"http://book/{page}", href))
    if url.netloc != "book":
        return None  # external: not checked (no network)
    path = HTML / unquote(url.path.lstrip("/"))
    if path.is_dir():
        path = path / "index.html"
    if not path.exists():
        return f"{href}: no file {path.relative_to(HTML)}"
    if url.fragment and path.suffix == ".html":
        html = path.read_text(encoding="utf-8")
        if not re.search(rf'id="{re.escape(unquote(url.fragment))}"', html):
            return f"{href}: no anchor #{url.fragment} in {path.name}"
    return None


@pytest.mark.parametrize("page", PAGES)
def test_page_in_browser(page, server, browser):
    browser.get_log("browser")  # clear
    browser.get(server + page)
    mathjax = browser.execute_async_script(WAIT_FOR_MATHJAX)
    facts = browser.execute_script(PAGE_FACTS)
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"JavaScript errors on {page}: {errors}"
    assert mathjax is not False or facts["typeset"] == 0, f"MathJax did not load on {page}"
    assert facts["rawMath"] == 0, f"{facts['rawMath']} untypeset maths delimiters left on {page}"
    assert not facts["brokenImages"], f"images that did not load on {page}: {facts['brokenImages']}"
    shown = urlparse(browser.current_url).path.lstrip("/")  # index.html redirects to the landing page
    broken = [p for p in (_target_exists(shown, h) for h in facts["links"]) if p]
    assert not broken, f"broken internal links on {page}: {broken}"
    if page.startswith("nbs/") or page.startswith("book/"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / (Path(page).stem + ".png")))


def test_maths_is_typeset_where_the_source_has_maths(server, browser):
    browser.get(server + "nbs/05_components.html")
    browser.execute_async_script(WAIT_FOR_MATHJAX)
    assert browser.execute_script(PAGE_FACTS)["typeset"] > 50
