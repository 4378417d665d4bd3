"""A newcomer's first hour with the embedded hub: ``aifhub up`` on a terminal, as ``make run`` starts it.

One hub for the module (GPUs ``0,1`` given, metering once an hour, so that only stops charge): a learner
starts the GPU workshop and a stranger is refused; the grading CLI works on the local state with no token
given; users deleted and created again are back in their courses' groups; every way to enrol adds just the
new member to the course's group (counted in the hub's own request metrics); what the terminal showed is only
what matters; and stopping ``aifhub up`` with a sandbox running charges it to its stop.
"""

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import requests

from browser import launch, login, screenshot, unavailable
from conftest import start_hub
from hubrunner import PASSWORD, REPO

GPU_COURSE = "gpu-fundamentals"  # roster: learner1, learner2; instructor: instructor
MOOC = "dl-basics"  # open enrolment
CODE_COURSE = "code-course"
CODE = "join-me-now"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\([AB0]")


def add_code_course(courses):
    text = (courses / MOOC / "course.yaml").read_text()
    folder = courses / CODE_COURSE
    folder.mkdir()
    (folder / "course.yaml").write_text(
        text.replace(f"id: {MOOC}", f"id: {CODE_COURSE}")
        .replace("enrollment: open", f"enrollment: code\nenrollment_code: {CODE}")
        .replace("title: Deep Learning Basics", "title: Code Course")
        .replace("assignments: [ps1-digits]", "")
        .replace("completion:\n  assignments:\n    ps1-digits: {min_score: 5}\n", "")  # it names ps1-digits
    )


@pytest.fixture(scope="module")
def hub(hub_dir):
    running = start_hub(hub_dir, "0,1", prepare_courses=add_code_course, meter_interval=3600, terminal=True)
    yield running
    running.stop()


def terminal(hub):
    """What the terminal showed so far, without colours."""
    return ANSI.sub("", hub.logs()).replace("\r\n", "\n")


def wait_for(what, check, timeout=30, interval=0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting until {what}"
        time.sleep(interval)


def members(hub, group):
    r = hub.api("GET", f"groups/{group}")
    return set(r.json()["users"]) if r.status_code == 200 else set()


# -- a spawn, and a refusal as the learner reads it ---------------------------------------------------------


def test_a_learner_starts_the_workshop_and_a_stranger_is_refused_in_plain_words(hub):
    hub.started_at = datetime.now(timezone.utc)
    r = hub.api("POST", "users/learner1/server", json={"course": GPU_COURSE})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("learner1")
    hub.ready_at = datetime.now(timezone.utc)

    hub.ensure_user("stranger")
    r = hub.api("POST", "users/stranger/server", json={"course": GPU_COURSE})
    assert r.status_code == 403
    assert r.json()["message"].startswith("You are not enrolled in GPU Programming Fundamentals")

    if unavailable():
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # the link a course page gives, followed by someone not on its roster
        browser = launch(p)
        page = login(browser.new_context(), hub.url, "stranger2", PASSWORD)
        page.goto(f"{hub.url}/hub/spawn?opt-course={GPU_COURSE}")
        error = page.locator(".spawn-error-msg")
        error.wait_for()
        text = error.inner_text()
        screenshot(page, "spawn-refused")
        browser.close()
    assert "You are not enrolled in GPU Programming Fundamentals" in text
    assert "SpawnException" not in text and "403" not in text and "reason=" not in text


# -- the grading CLI after a plain start ----------------------------------------------------------------------


def cli(*args, env=None):
    clean = {k: v for k, v in os.environ.items() if k not in ("AIFHUB_TOKEN", "AIFHUB_ADMIN_TOKEN", "AIFHUB_URL")}
    return subprocess.run(
        [sys.executable, "-m", "aifhub", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean | (env or {}),
        timeout=300,
    )


def test_the_grading_cli_works_on_the_local_state_without_a_token(hub, tmp_path):
    state = str(hub.state_dir)
    out = cli("assignments", "release", MOOC, "ps1-digits", "--state-dir", state)
    assert out.returncode == 0, out.stderr
    assert "Released dl-basics/ps1-digits" in out.stdout
    out = cli("assignments", "jobs", MOOC, "--state-dir", state, "--json")
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    out = cli("grades", "export", MOOC, "--state-dir", state)
    assert out.returncode == 0 and out.stdout.startswith("student_id,assignment_id"), out.stderr
    # allocation changes while the service owns the database go through it, with the same token
    out = cli("alloc", "topup", "EHPC-AIF-2026-PG01", "--gpu-hours", "1", "--note", "first hour", "--state-dir", state)
    assert out.returncode == 0, out.stderr

    # where there is no hub, the error says how to get a token
    (tmp_path / "ports.json").write_text('{"hub": 1, "proxy_api": 2, "service": 3}')
    out = cli("assignments", "jobs", MOOC, "--state-dir", str(tmp_path))
    assert out.returncode == 2
    assert "/hub/token" in out.stderr and "AIFHUB_TOKEN" in out.stderr and "--url needs" not in out.stderr


# -- groups follow users deleted and created again -----------------------------------------------------------


def test_a_user_created_again_is_back_in_the_course_groups(hub):
    learners, instructors = f"nbgrader-{GPU_COURSE}", f"formgrade-{GPU_COURSE}"
    assert "learner2" in members(hub, learners) and "instructor" in members(hub, instructors)

    for name in ("learner2", "instructor"):  # the admin API deletes and creates them again
        assert hub.api("DELETE", f"users/{name}").status_code == 204
        assert name not in members(hub, learners) | members(hub, instructors)
        assert hub.api("POST", f"users/{name}").status_code == 201
    wait_for(
        "learner2 and instructor are back in their groups",
        lambda: "learner2" in members(hub, learners) and "instructor" in members(hub, instructors),
        timeout=15,
    )

    assert hub.api("DELETE", "users/learner2").status_code == 204  # and a login creates them again
    session = requests.Session()
    session.get(f"{hub.url}/hub/login", timeout=30)
    r = session.post(
        f"{hub.url}/hub/login",
        timeout=30,
        data={"username": "learner2", "password": PASSWORD, "_xsrf": session.cookies.get("_xsrf")},
    )
    assert r.status_code == 200 and "/hub/login" not in r.url, r.url
    wait_for(
        "learner2 is back in the learners' group after logging in",
        lambda: "learner2" in members(hub, learners),
        timeout=15,
    )


# -- every way to enrol adds one member, in one request --------------------------------------------------------

METRIC = re.compile(
    r'^jupyterhub_request_duration_seconds_count\{code="(\d+)",handler="([^"]+)",method="(\w+)"\} (\S+)$'
)
GROUP_HANDLERS = ("jupyterhub.apihandlers.groups.", "jupyterhub.apihandlers.users.UserListAPIHandler")


def hub_group_requests(hub):
    """``{(handler, method): count}`` of the hub's group requests and user creations so far (its own metrics)."""
    counts = {}
    for line in hub.api("GET", "metrics").text.splitlines():
        m = METRIC.match(line)
        if m and m.group(2).startswith(GROUP_HANDLERS):
            key = (m.group(2).rsplit(".", 1)[1], m.group(3))
            counts[key] = counts.get(key, 0) + float(m.group(4))
    return counts


def group_requests_during(hub, action):
    before = hub_group_requests(hub)
    action()
    time.sleep(1)  # anything the service does after answering
    after = hub_group_requests(hub)
    return {k: int(after[k] - before.get(k, 0)) for k in after if after[k] != before.get(k, 0)}


ONE_ADD = {("GroupUsersAPIHandler", "POST"): 1}


def test_every_way_to_enrol_adds_only_the_new_member(hub):
    names = ["joiner-api", "joiner-code", "joiner-spawn", "joiner-page"]
    for name in names:
        hub.token_for(name)
    time.sleep(1.5)  # the new users' own resync (nothing to add: they are in no course yet)

    def api_enrol(name, course, **body):
        r = hub.service("POST", f"courses/{course}/enrol", token=hub.token_for(name), json=body)
        assert r.status_code == 201, r.text

    assert group_requests_during(hub, lambda: api_enrol("joiner-api", MOOC)) == ONE_ADD
    assert group_requests_during(hub, lambda: api_enrol("joiner-code", CODE_COURSE, code=CODE)) == ONE_ADD

    def spawn():
        r = hub.api("POST", "users/joiner-spawn/server", json={"course": MOOC})
        assert r.status_code in (201, 202), r.text
        hub.wait_ready("joiner-spawn")

    assert group_requests_during(hub, spawn) == ONE_ADD
    hub.stop_server("joiner-spawn")

    if not unavailable():
        from playwright.sync_api import sync_playwright

        def page_enrol():
            with sync_playwright() as p:
                browser = launch(p)
                page = login(browser.new_context(), hub.url, "joiner-page", PASSWORD, next_url="/services/aifhub/")
                page.locator(f"section#course-{MOOC}").get_by_role("button", name="Enrol").click()
                page.wait_for_load_state()
                browser.close()

        assert group_requests_during(hub, page_enrol) == ONE_ADD
    assert set(names) <= members(hub, f"nbgrader-{MOOC}") | members(hub, f"nbgrader-{CODE_COURSE}")


# -- the terminal ----------------------------------------------------------------------------------------------

# Warnings a newcomer may see, and why they stay: JupyterHub's own, about choices aifhub makes on purpose, or
# answers to what this module asked for.
EXPECTED_WARNINGS = [
    r"Allowing service aifhub to complete OAuth without confirmation",  # its pages open without a consent page
    r"Running JupyterHub without SSL",  # the embedded hub serves on loopback only
    r"Adding missing route for aifhub",  # every start: the proxy is new
    r"User \S+ is slow to start",  # a sandbox on a busy machine
    r"403 (POST /hub/api/users/stranger/server|GET /hub/spawn\?opt-course=)",  # the refusals asked for above
    r"'extra_template_paths' was found in both NotebookApp and ServerApp",  # JupyterHub 6.1.1's singleuser, notebook 7
    r"sandbox: no device node /dev/nvidia\d+ on this machine",  # --gpus 0,1 here names GPUs this machine lacks
]
NOISE = [
    "is deprecated",
    "admin_users",
    "[ConfigProxy] error",
    "ECONNREFUSED",
    "Received unhandled user_options",
    "SpawnException",
    "Traceback",
    "User options should be prefixed",
    "already exists",
    "already in group",
    "No such group",
    "Could not release",
]


def test_the_terminal_shows_only_what_matters(hub):
    shown = terminal(hub)
    assert "aifhub is running at" in shown and "Not starting stranger's server" in shown
    for noise in NOISE:
        assert noise not in shown, f"the terminal shows {noise!r}:\n" + "\n".join(
            line for line in shown.splitlines() if noise in line
        )
    errors = [line for line in shown.splitlines() if re.match(r"^(\[E |\[C |ERROR:|CRITICAL:)", line)]
    assert not errors, "errors on the terminal:\n" + "\n".join(errors)
    warnings = [line for line in shown.splitlines() if re.match(r"^(\[W |WARNING:)", line) or " warn: " in line]
    unexpected = [line for line in warnings if not any(re.search(w, line) for w in EXPECTED_WARNINGS)]
    assert not unexpected, "unexpected warnings on the terminal:\n" + "\n".join(unexpected)


# -- shutdown ------------------------------------------------------------------------------------------------


def usage(hub, user):
    out = cli("usage", "report", "--user", user, "--format", "json", "--state-dir", str(hub.state_dir))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["sessions"]


def when(text):
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_stopping_aifhub_up_charges_each_running_sandbox_to_its_stop(hub):
    assert hub.server_model("learner1")["ready"]
    before = len(terminal(hub))
    sigterm_at = datetime.now(timezone.utc)
    assert hub.stop() == 0
    exited_at = datetime.now(timezone.utc)
    hub.start()

    (session,) = [s for s in usage(hub, "learner1") if s["course"] == GPU_COURSE]
    start, end = when(session["start"]), when(session["end"])
    assert session["state"] == "ended"
    # charged from its admission (during the spawn) to its stop (after the SIGTERM, before aifhub up exited)
    assert hub.started_at <= start <= hub.ready_at
    assert sigterm_at <= end <= exited_at, (sigterm_at, end, exited_at)
    # ... at the moment the hub stopped it: JupyterHub records a server's stop (its last activity) as soon as the
    # spawner's stop returns, whose last step is the release. A second allows for a slow machine; the service's
    # own exit, before which it charges what still runs, comes seconds earlier (JupyterHub waits for it to exit,
    # then stops the sandboxes), and before the sandboxes were stopped first, nothing after the last metering.
    stopped = hub.api("GET", "users/learner1?include_stopped_servers=1").json()["servers"][""]
    assert stopped["stopped"]
    hub_stop = datetime.fromisoformat(stopped["last_activity"].replace("Z", "+00:00"))
    assert abs((end - hub_stop).total_seconds()) <= 1.0, (end, hub_stop)
    # a full GPU of weight 1: the charge is the wall time between them, to the millisecond of each event
    wall_ms = (end - start).total_seconds() * 1000
    assert abs(session["gpu_ms"] - wall_ms) <= session["events"], (session["gpu_ms"], wall_ms)

    shutdown = terminal(hub)[before:]
    assert "Stopping 1 sandbox(es) before the service exits" in shutdown
    for noise in ("Could not release", "Traceback", "[E ", "ERROR:"):
        assert noise not in shutdown, shutdown
