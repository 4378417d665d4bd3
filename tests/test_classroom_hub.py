"""Consented help on a real hub (``aifhub up``, a real sandbox, JupyterHub's sharing API): a helper without the
learner's accept gets 403 on the learner's server; after the accept they reach it (and a kernel in it); when the
learner ends it, the share is revoked, the helper's open websocket is closed and their next request refused,
each within a second or two (measured); the audit log holds every step."""

import asyncio
import time

import pytest
import requests
import yaml
from conftest import start_hub
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

COURSE = "dl-basics"


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


def status_code(hub, token, path="api/status"):
    return requests.get(
        f"{hub.url}/user/ana/{path}", headers={"Authorization": f"token {token}"}, timeout=30
    ).status_code


def bar(hub, token, method, path, **kw):
    return requests.request(
        method, f"{hub.url}/user/ana/aifhub/bar/{path}", headers={"Authorization": f"token {token}"}, timeout=60, **kw
    )


def wait_for(check, timeout):
    """Seconds until ``check()`` is true (AssertionError after ``timeout``)."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "not within the time"
        time.sleep(0.05)
    return time.monotonic() - t0


def new_kernel(hub, token):
    r = requests.post(f"{hub.url}/user/ana/api/kernels", headers={"Authorization": f"token {token}"}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def _open_kernel_socket(hub, token, kernel_id):
    ws_url = hub.url.replace("http", "ws", 1) + f"/user/ana/api/kernels/{kernel_id}/channels"
    return await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))


def test_help_needs_the_accept_and_ends_at_once(hub):
    ana, helper = hub.token_for("ana"), hub.token_for("helper1")
    hub.spawn("ana", COURSE)
    assert status_code(hub, ana) == 200
    assert status_code(hub, helper) == 403  # no accept, no access

    # the JupyterLab bar: the prebuilt extension is served to the sandbox's JupyterLab, and its server side
    # forwards the learner's own calls to the service (the page never holds a token)
    page = requests.get(f"{hub.url}/user/ana/lab", headers={"Authorization": f"token {ana}"}, timeout=60).text
    assert "aifhub-bar" in page
    assert bar(hub, ana, "GET", "context").json()["course"] == COURSE
    r = bar(hub, ana, "POST", "me/hands", json={"course": COURSE, "question": "import fails"})
    assert r.status_code == 201, r.text
    assert bar(hub, ana, "GET", f"courses/{COURSE}/audit").status_code == 404  # only the learner's endpoints
    hand = r.json()["id"]
    assert hub.service("POST", f"courses/{COURSE}/hands/{hand}/take", helper).status_code == 200
    assert hub.service("POST", f"courses/{COURSE}/hands/{hand}/ask", helper).status_code == 200
    assert status_code(hub, helper) == 403  # asking is not access

    r = hub.service("POST", f"me/hands/{COURSE}/accept", ana)
    assert r.status_code == 200, r.text
    start_s = wait_for(lambda: status_code(hub, helper) == 200, 15)
    print(f"help starts {start_s:.2f}s after the accept")
    # the helper is in the learner's JupyterLab now, but the bar's server side answers the owner only
    assert bar(hub, helper, "GET", "me").status_code == 403
    assert bar(hub, helper, "POST", f"me/hands/{COURSE}/end").status_code == 403

    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(_open_kernel_socket(hub, helper, new_kernel(hub, helper)))
        r = hub.service("POST", f"me/hands/{COURSE}/end", ana)
        assert r.status_code == 200, r.text
        t_end = time.monotonic()
        msg = loop.run_until_complete(asyncio.wait_for(_until_closed(conn), 10))
        closed_s = time.monotonic() - t_end
        print(f"the helper's websocket closed {closed_s:.2f}s after the end")
        assert msg is None and closed_s < 1.5
    finally:
        loop.close()
    refused_s = wait_for(lambda: status_code(hub, helper) == 403, 10)
    print(f"the helper's next request refused {refused_s:.2f}s after the end")
    assert refused_s < 2
    assert status_code(hub, ana) == 200  # the learner's own access is untouched

    steps = [e["action"] for e in reversed(hub.service("GET", f"courses/{COURSE}/audit", ana).json()["audit"])]
    assert steps[:7] == ["raised", "taken", "asked", "accepted", "granted", "ended", "revoked"], steps
    audit = hub.service("GET", f"courses/{COURSE}/audit", ana).json()["audit"]
    assert "share revoked" in audit[0]["detail"] and "1 open connection(s) of helper1 closed" in audit[0]["detail"]
    # only the service may tell the server to end guests' access: not the learner, not the helper
    for token in (ana, helper):
        r = requests.post(f"{hub.url}/user/ana/aifhub/guests", headers={"Authorization": f"token {token}"}, json={})
        assert r.status_code == 403, r.text


async def _until_closed(conn):
    while True:
        msg = await conn.read_message()
        if msg is None:
            return None
