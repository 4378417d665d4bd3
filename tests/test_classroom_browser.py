"""The live workshop in two browsers at once (a learner and a helper, Debian's Chromium): the learner raises a hand
from the aifhub bar in JupyterLab, the helper takes it and asks from the queue page, the learner accepts, the helper
opens the learner's JupyterLab, the learner ends it and the helper is out; all with the keyboard alone. Every aifhub
page of the flow, and the bar, pass axe-core's WCAG 2.1 A and AA rules."""

from pathlib import Path

import pytest
import yaml

import browser
from conftest import start_hub
from hubrunner import PASSWORD

WHY_NOT = browser.unavailable()
AXE = Path(__file__).resolve().parent / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
pytestmark = pytest.mark.skipif(
    WHY_NOT is not None or not AXE.exists(),
    reason=f"browser tests need a browser and axe-core (make setup): {WHY_NOT or AXE}",
)
COURSE = "dl-basics"
HELP = f"/services/aifhub/courses/{COURSE}/help"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def add_helpers(courses):
    path = courses / COURSE / "course.yaml"
    data = yaml.safe_load(path.read_text())
    data["helpers"] = ["helper1"]
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="none", prepare_courses=add_helpers)
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        b = browser.launch(p)
        yield b
        b.close()


def person(chromium, hub, name, next_url="/hub/home"):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    return browser.login(context, hub.url, name, PASSWORD, next_url)


def axe_violations(page, include=None):
    """axe-core's WCAG 2.1 A/AA violations on ``page`` (or inside the element ``include``)."""
    page.add_script_tag(path=str(AXE))
    context = {"include": [include]} if include else None
    result = page.evaluate(
        "([ctx, tags]) => axe.run(ctx || document, {runOnly: {type: 'tag', values: tags}})", [context, WCAG]
    )
    return [
        f"{v['id']}: {v['help']} ({', '.join(n['target'][0] for n in v['nodes'][:3])})" for v in result["violations"]
    ]


def press(page, selector):
    """Reach ``selector`` with the keyboard (focus, as Tab would) and press Enter: no mouse."""
    page.focus(selector)
    page.keyboard.press("Enter")


def test_raise_take_ask_accept_end_in_two_browsers(hub, chromium):
    from playwright.sync_api import expect

    hub.ensure_user("helper1")
    hub.spawn("ana", COURSE)
    ana = person(chromium, hub, "ana", "/user/ana/lab")
    helper = person(chromium, hub, "helper1", HELP)
    try:
        # the learner's bar in JupyterLab: raise a hand with the keyboard
        bar = ana.locator("#aifhub-bar")
        expect(bar).to_contain_text("Raise hand")
        assert axe_violations(ana, "#aifhub-bar") == []
        ana.fill("#aifhub-question", "my loss is NaN")
        press(ana, "#aifhub-question")
        expect(bar).to_contain_text("waiting for a helper")

        # the helper: no access to the learner's server yet
        assert helper.request.get(f"{hub.url}/user/ana/api/status").status == 403
        helper.goto(hub.url + HELP)
        queue = helper.locator("#queue")
        expect(queue).to_contain_text("my loss is NaN")
        assert axe_violations(helper) == []
        press(helper, "button:has-text('Take ana')")
        expect(helper.locator(".flash-ok")).to_contain_text("took ana")
        press(helper, "button:has-text('Ask ana to let me in')")
        expect(helper.locator(".flash-ok")).to_contain_text("asked ana")

        # the learner sees the request in the bar and accepts it
        expect(bar).to_contain_text("helper1 asks to look inside", timeout=20_000)
        assert axe_violations(ana, "#aifhub-bar") == []
        press(ana, "#aifhub-bar button:has-text('Accept')")
        expect(bar).to_contain_text("helper1 has access")

        # the helper opens the learner's JupyterLab (and sees no bar of the learner's: it answers its owner only)
        sockets = []  # the helper's open websockets to the learner's server
        helper.on("websocket", lambda ws: "/user/ana/" in ws.url and sockets.append(ws))
        helper.goto(f"{hub.url}/user/ana/lab")
        # JupyterHub asks the helper to authorize access to another's server (the share's OAuth consent)
        helper.wait_for_load_state()
        if helper.get_by_role("heading", name="Authorize access").count():
            press(helper, "form [type=submit]")
        expect(helper.locator("#jp-main-dock-panel")).to_be_visible()
        assert helper.request.get(f"{hub.url}/user/ana/api/status").status == 200
        helper.wait_for_timeout(1500)  # the service's loop sees the helper's login to the server (each second)
        expect(helper.locator("#aifhub-bar")).to_be_hidden()

        # the learner ends it: the helper is out at once
        assert sockets and not any(ws.is_closed() for ws in sockets)
        press(ana, "#aifhub-bar button:has-text('End access')")
        expect(bar).to_contain_text("helper1 is coming")
        helper.wait_for_timeout(1000)
        assert all(ws.is_closed() for ws in sockets), [ws.url for ws in sockets if not ws.is_closed()]
        assert helper.request.get(f"{hub.url}/user/ana/api/status").status == 403

        # the learner's help page, with its log
        ana.goto(hub.url + HELP)
        expect(ana.locator("#audit")).to_contain_text("revoked")
        assert axe_violations(ana) == []
    finally:
        for page in (ana, helper):
            page.context.close()
    steps = [
        e["action"]
        for e in reversed(hub.service("GET", f"courses/{COURSE}/audit", hub.token_for("ana")).json()["audit"])
    ]
    assert steps[:8] == ["raised", "taken", "asked", "accepted", "granted", "used", "ended", "revoked"], steps


def test_the_instructors_pages_pass_axe(hub, chromium):
    teacher = person(chromium, hub, "instructor", HELP)
    try:
        assert axe_violations(teacher) == []
        teacher.fill("#ann-text", "Break until 11:00")
        press(teacher, "#ann-text")  # Enter submits the form
        teacher.wait_for_selector(".flash-ok")
        assert axe_violations(teacher) == []
        teacher.goto(f"{hub.url}/services/aifhub/courses/{COURSE}")
        assert axe_violations(teacher) == []
    finally:
        teacher.context.close()
