"""Browser helpers for the page tests: Debian's Chromium driven by Playwright (Python).

The tests use the system browser (``/usr/bin/chromium``), never one that Playwright downloads:
``make test`` installs Debian's ``chromium`` package when it can (root with apt); where it cannot,
``unavailable()`` says why and the browser tests skip.
"""

import os
import re
from pathlib import Path
from urllib.parse import quote

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",  # the tests run as root, where Chromium's own sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# URLs a page may "load" without any network traffic
LOCAL_SCHEMES = ("data:", "blob:", "about:")


def unavailable():
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[test]'"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(apt-get install chromium; `make test` does it when run as root)"
        )
    return None


def launch(playwright):
    """Headless Chromium; Playwright gives every launch a fresh, temporary user-data dir."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)


class RequestLog:
    """Every URL that the pages of one or more browser contexts request, websockets included."""

    def __init__(self):
        self.urls = []

    def watch(self, context):
        context.on("request", lambda req: self.urls.append(req.url))
        context.on("page", lambda page: page.on("websocket", lambda ws: self.urls.append(ws.url)))
        return context

    def outside(self, hub_url):
        """URLs that did not go to the hub (``hub_url``, or its ``ws://`` twin)."""
        allowed = (hub_url.rstrip("/") + "/", re.sub(r"^http", "ws", hub_url).rstrip("/") + "/")
        return sorted({u for u in self.urls if not u.startswith(allowed + LOCAL_SCHEMES)})


def login(context, hub_url, user, password, next_url="/hub/home"):
    """A new page of ``context`` logged in as ``user`` through the hub's login form, at ``next_url``."""
    page = context.new_page()
    page.goto(f"{hub_url}/hub/login?next={quote(next_url)}")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.locator("form [type=submit]").first.click()
    page.wait_for_url(lambda url: "/hub/login" not in url)
    return page


def screenshot(page, name):
    """Save a full-page screenshot as ``tests/artifacts/<name>.png``; returns its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Form controls that have no label a person using a screen reader (or get_by_label) can find: no
# <label for>, no wrapping <label>, no aria-label, no aria-labelledby pointing at text, no title; buttons need text.
_UNLABELLED_JS = """
() => {
  const text = (s) => (s || "").replace(/\\s+/g, " ").trim();
  const labelledBy = (el) => text((el.getAttribute("aria-labelledby") || "").split(/\\s+/)
      .map((id) => document.getElementById(id)).filter(Boolean).map((n) => n.textContent).join(" "));
  const out = [];
  for (const el of document.querySelectorAll("input, select, textarea, button")) {
    const type = (el.getAttribute("type") || "").toLowerCase();
    if (type === "hidden") continue;
    let name = text(el.getAttribute("aria-label")) || labelledBy(el);
    if (!name && el.labels) name = text(Array.from(el.labels).map((l) => l.textContent).join(" "));
    if (!name && (el.tagName === "BUTTON")) name = text(el.textContent);
    if (!name && ["submit", "reset", "button"].includes(type)) name = text(el.value);
    if (!name && type === "image") name = text(el.getAttribute("alt"));
    if (!name) name = text(el.getAttribute("title"));  // the accessible name's last resort
    if (!name) out.push(el.outerHTML.slice(0, 200));
  }
  return out;
}
"""


def unlabelled_controls(page):
    """The form controls of ``page`` without an accessible label (outer HTML of each)."""
    return page.evaluate(_UNLABELLED_JS)
