"""LTI 1.3 through a real hub (``aifhub up --auth lti13``) and a real platform (tests/ltiplatform.py,
built on lti1p3platform: signed launches, JWKS, token, AGS, NRPS): launches as learner and instructor
open the linked course (and an assignment), roles map, NRPS fills the roster, a launch for another
course is refused; released feedback sends each learner's score once, a locked gradebook shows the
failure to the instructor, and a platform that is down is retried, then sent."""

import json
import re
import subprocess
import sys
import time
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

import browser
from aifhub.auth.names import username_for
from gradingkit import blank_notebook, solution_notebook, submit, wait_jobs
from hubrunner import RunningHub, copy_courses, free_port

HERE = Path(__file__).resolve().parent
COURSE, ASSIGNMENT = "dl-basics", "ps1-digits"
CONTEXT = {"id": "moodle-course-42", "title": "Deep Learning (Moodle)", "label": "DL101"}
ROLE = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
MEMBERS = [
    {"user_id": "u-lea", "name": "Lea Learner", "email": "lea@lms.test", "roles": [ROLE + "Learner"]},
    {"user_id": "u-leo", "name": "Leo Learner", "email": "leo@lms.test", "roles": [ROLE + "Learner"]},
    {"user_id": "u-ines", "name": "Ines Instructor", "email": "ines@lms.test", "roles": [ROLE + "Instructor"]},
    {
        "user_id": "u-old",
        "name": "Old Learner",
        "email": "old@lms.test",
        "roles": [ROLE + "Learner"],
        "status": "Inactive",
    },
]


class Platform:
    def __init__(self, folder, hub_url):
        self.folder = Path(folder)
        self.folder.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.folder / "platform.json"
        self.config.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "issuer": self.url,
                    "client_id": "aifhub-lti-tests",
                    "deployment_id": "1",
                    "tool_login_url": f"{hub_url}/hub/lti13/oauth_login",
                    "tool_launch_url": f"{hub_url}/hub/lti13/oauth_callback",
                    "tool_jwks_url": f"{hub_url}/services/aifhub/lti/jwks",
                    "context": CONTEXT,
                    "members": MEMBERS,
                    "key_file": str(self.folder / "platform-key.pem"),
                    "state_file": str(self.folder / "received.json"),
                }
            )
        )
        self.proc = None

    def start(self):
        self.log = open(self.folder / "platform.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "ltiplatform.py"), str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the platform exited; see {self.folder / 'platform.log'}"
            try:
                requests.get(f"{self.url}/jwks", timeout=2).raise_for_status()
                return self
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError("the LTI platform did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()

    def state(self):
        return requests.get(f"{self.url}/test/state", timeout=10).json()


@pytest.fixture(scope="module")
def stack(hub_dir):
    port = free_port()
    hub_url = f"http://127.0.0.1:{port}"
    platform = Platform(hub_dir / "platform", hub_url).start()
    (hub_dir / "login.yaml").write_text(
        yaml.safe_dump(
            {
                "lti13": {
                    "issuer": platform.url,
                    "client_id": ["aifhub-lti-tests"],
                    "deployment_ids": ["1"],
                    "authorize_url": f"{platform.url}/auth",
                    "jwks_endpoint": f"{platform.url}/jwks",
                    "token_url": f"{platform.url}/token",
                    "course_map": {CONTEXT["id"]: COURSE},
                    "passback_backoff": 1,
                    "passback_attempts": 8,
                }
            }
        )
    )
    (hub_dir / "sandbox_images").symlink_to(HERE.parent / "sandbox_images")
    hub = RunningHub(
        hub_dir / "state",
        copy_courses(hub_dir / "courses"),
        log_path=hub_dir / "aifhub-up.log",
        extra_args=["--auth", "lti13", "--auth-config", str(hub_dir / "login.yaml")],
    )
    hub.port, hub.url = port, hub_url
    hub.args[hub.args.index("--port") + 1] = str(port)
    hub.start()
    yield hub, platform
    hub.stop()
    platform.stop()


def name_of(user_id, platform):
    return username_for(user_id, "hashed", platform.url)


def launch(platform, user_id, custom=None, deployment=""):
    """The LMS link clicked with plain HTTP: platform → hub's login → platform's authorisation → the signed
    launch posted to the hub. Returns the session and the hub's answer (not followed)."""
    s = requests.Session()
    params = {"user": user_id, "custom": json.dumps(custom or {}), "deployment": deployment}
    r = s.get(f"{platform.url}/start", params=params, timeout=30)
    form = re.search(r'<form method="POST" action="([^"]+)"', r.text)
    assert form, f"no launch form from the platform: {r.status_code} {r.text[:300]}"
    fields = dict(re.findall(r'name="(id_token|state)" value="([^"]*)"', r.text))
    return s, s.post(unescape(form.group(1)), data=fields, allow_redirects=False, timeout=30)


def roster(hub):
    return {e["user"]: e["how"] for e in hub.service("GET", f"courses/{COURSE}/roster").json()["roster"]}


def test_learner_launch_opens_the_linked_course_and_enrols(stack):
    hub, platform = stack
    s, r = launch(platform, "u-lea")
    lea = name_of("u-lea", platform)
    assert r.status_code == 302 and r.headers["Location"] == f"/hub/spawn?opt-course={COURSE}", (
        r.status_code,
        r.text[:300],
    )
    assert roster(hub).get(lea) == "enrolled (lti)"
    assert lea in hub.api("GET", f"groups/nbgrader-{COURSE}").json()["users"]
    assert lea not in hub.api("GET", f"groups/formgrade-{COURSE}").json()["users"]
    page = s.get(f"{hub.url}/services/aifhub/courses/{COURSE}", timeout=30)
    assert page.status_code == 200 and "Instructor's view" not in page.text


def test_the_tool_configuration_the_lms_installs_names_aifhub(stack):
    hub, _ = stack
    r = requests.get(f"{hub.url}/hub/lti13/config", timeout=30)
    assert r.status_code == 200, r.text[:300]
    config = r.json()
    assert config["title"] == "aifhub" and "aifhub" in config["description"], config
    assert "JupyterHub" not in json.dumps(config), config


def test_instructor_launch_deep_links_an_assignment_and_syncs_the_roster(stack):
    hub, platform = stack
    s, r = launch(platform, "u-ines", custom={"assignment": ASSIGNMENT})
    ines = name_of("u-ines", platform)
    location = urlsplit(r.headers["Location"])
    assert r.status_code == 302 and location.path == "/hub/spawn", r.headers
    query = parse_qs(location.query)
    assert query["opt-course"] == [COURSE] and query["next"] == [
        f"/services/aifhub/courses/{COURSE}#assignment-{ASSIGNMENT}"
    ]
    assert ines in hub.api("GET", f"groups/formgrade-{COURSE}").json()["users"]
    # NRPS: leo never launched, yet the roster has him; the inactive member is not there
    deadline = time.monotonic() + 30
    while name_of("u-leo", platform) not in roster(hub):
        assert time.monotonic() < deadline, f"the roster sync did not add leo: {roster(hub)}"
        time.sleep(0.5)
    assert name_of("u-old", platform) not in roster(hub)
    page = s.get(f"{hub.url}/services/aifhub/courses/{COURSE}", timeout=30)
    assert "Instructor's view" in page.text and "Deep Learning (Moodle)" in page.text and "roster synced" in page.text


def test_a_link_cannot_open_a_course_it_is_not_linked_to(stack):
    hub, platform = stack
    r = requests.get(f"{hub.url}/hub/lti13/oauth_login", timeout=30)  # the hub's own login button
    assert r.status_code == 400 and "open it from your course in your LMS" in r.text
    _, r = launch(platform, "u-ines", custom={"course": "gpu-fundamentals"})
    assert r.status_code == 403 and "is linked to 'dl-basics'" in unescape(r.text), r.text[:500]
    assert name_of("u-ines", platform) not in hub.api("GET", "groups/formgrade-gpu-fundamentals").json()["users"]


def test_a_launch_from_an_unconfigured_deployment_is_refused(stack):
    """#23: a deployment of the tool the admin did not name (another course author's, on the same platform)
    opens nothing: the launch is refused, saying why, and grants no role."""
    hub, platform = stack
    _, r = launch(platform, "u-ines", deployment="someone-elses-deployment")
    assert r.status_code == 403 and "was not told about" in unescape(r.text), (r.status_code, r.text[:500])
    assert "deployment_ids" in unescape(r.text)
    _, r = launch(platform, "u-ines", deployment="1")  # the configured one still works
    assert r.status_code == 302, (r.status_code, r.text[:300])


def passback_state(hub):
    return hub.service("GET", f"courses/{COURSE}/lti").json()


def wait_for(predicate, what, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_released_grades_reach_the_lms_once_failures_show_and_a_down_platform_is_retried(stack, hub_dir):
    hub, platform = stack
    lea, leo = name_of("u-lea", platform), name_of("u-leo", platform)
    launch(platform, "u-lea")
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release").status_code == 200
    assert submit(hub, lea, solution_notebook()).status_code == 201
    assert submit(hub, leo, blank_notebook()).status_code == 201
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    jobs = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde").json()["jobs"]
    graded = wait_jobs(hub, [j["id"] for j in jobs])
    assert graded[lea]["score"] > 0 and graded[leo]["score"] == 0, graded

    # 1. the LMS's gradebook is locked: the scores fail at once and the instructor sees it on the course page
    requests.post(f"{platform.url}/test/state", data={"refuse_scores": "1"}, timeout=10)
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback").status_code == 200
    state = wait_for(lambda: (st := passback_state(hub))["counts"]["failed"] == 2 and st, "two failed scores")
    assert all("403" in x["last_error"] for x in state["scores"]), state
    ines = name_of("u-ines", platform)
    page = requests.get(
        f"{hub.url}/services/aifhub/courses/{COURSE}",
        timeout=30,
        headers={"Authorization": f"token {hub.token_for(ines)}"},
    )
    assert "failed: 2" in page.text and "Resend failed scores" in page.text, page.text[-3000:]

    # 2. the platform goes down; the instructor resends: attempts fail and are retried with backoff
    platform.stop()
    r = hub.service("POST", f"courses/{COURSE}/lti/resend", token=hub.token_for(ines))
    assert r.status_code == 200 and r.json()["resent"] == 2
    wait_for(
        lambda: all(
            x["state"] == "pending" and x["attempts"] >= 2 and "not reachable" in (x["last_error"] or "")
            for x in passback_state(hub)["scores"]
        ),
        "retries against the platform that is down",
    )

    # 3. it comes back: the retries deliver, one line item, one score per learner with its maximum and timestamp
    platform.start()
    wait_for(lambda: passback_state(hub)["counts"]["sent"] == 2, "the scores sent after the platform came back", 60)
    received = platform.state()
    assert len(received["lineitems"]) == 1, received
    ((item_id, item),) = received["lineitems"].items()
    assert item["resourceId"] == ASSIGNMENT and item["scoreMaximum"] == graded[lea]["max_score"]
    scores = {s["userId"]: s for s in received["scores"][item_id]}
    assert len(received["scores"][item_id]) == 2 and set(scores) == {"u-lea", "u-leo"}, received
    assert scores["u-lea"]["scoreGiven"] == graded[lea]["score"] and scores["u-leo"]["scoreGiven"] == 0
    assert scores["u-lea"]["scoreMaximum"] == graded[lea]["max_score"] and scores["u-lea"]["timestamp"]

    # 4. the same grades released again: nothing is sent twice
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback").status_code == 200
    time.sleep(3)
    assert len(platform.state()["scores"][item_id]) == 2
    assert len(passback_state(hub)["scores"]) == 2


WHY_NOT = browser.unavailable()


@pytest.mark.skipif(WHY_NOT is not None, reason=f"needs a browser: {WHY_NOT}")
def test_browser_launch_opens_the_course_sandbox(stack):
    from playwright.sync_api import sync_playwright

    hub, platform = stack
    lea = name_of("u-lea", platform)
    with sync_playwright() as p:
        chromium = browser.launch(p)
        try:
            page = chromium.new_context().new_page()
            page.goto(f"{platform.url}/start?user=u-lea")
            page.wait_for_url(re.compile(rf"/user/{lea}/"), timeout=120_000)
            browser.screenshot(page, "lti-launch-sandbox")
            model = hub.server_model(lea)
            assert model and model["ready"] and model["user_options"].get("course") == COURSE, model
        finally:
            chromium.close()
    hub.stop_server(lea)
