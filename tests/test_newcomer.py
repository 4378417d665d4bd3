"""What a newcomer trips over, through the interfaces they use: the grading CLI and REST API in the README's
order (feedback before anything is graded; a step that fails), a stock client's spawn with no body, a stop
while JupyterLab still loads, a second `aifhub up` with the same uid ranges, and a tiny quota's refusal.

One hub for the module (GPU ``0`` given, a course with a quota of 0.003 GPU-hours).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import start_hub
from hubrunner import ADMIN_TOKEN, REPO, free_port, worker_id_ranges

MOOC = "dl-basics"  # open enrolment; assignment ps1-digits
GPU_COURSE = "gpu-fundamentals"  # roster: learner1, learner2; instructor: instructor
TINY = "tiny-quota"  # a GPU course whose learners have 0.003 GPU-hours (10.8 s) a day
BROKEN_ASSIGNMENT = "ps0-broken"  # a source notebook that is not JSON: nbgrader fails on it
PATHLIKE = re.compile(r"(?<![\w.])/(?:[\w.-]+/)+")


def add_courses(courses):
    text = (courses / GPU_COURSE / "course.yaml").read_text()
    (courses / TINY).mkdir()
    (courses / TINY / "course.yaml").write_text(
        text.replace(f"id: {GPU_COURSE}", f"id: {TINY}")
        .replace("title: GPU Programming Fundamentals", "title: Tiny Quota")
        .replace("roster: [learner1, learner2]", "roster: [quota1]")
        .replace("gpu_hours: 4, window: week", "gpu_hours: 0.003, window: day")
        .replace("assignments: [ps1-matmul]", "")
    )
    broken = courses / MOOC / "source" / BROKEN_ASSIGNMENT
    broken.mkdir(parents=True)
    (broken / "notebook.ipynb").write_text("this is not a notebook {")


@pytest.fixture(scope="module")
def hub(hub_dir):
    running = start_hub(hub_dir, "0", prepare_courses=add_courses)
    yield running
    running.stop()


def cli(hub, *args):
    clean = {k: v for k, v in os.environ.items() if k not in ("AIFHUB_TOKEN", "AIFHUB_ADMIN_TOKEN", "AIFHUB_URL")}
    return subprocess.run(
        [sys.executable, "-m", "aifhub", *args, "--state-dir", str(hub.state_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean,
        timeout=300,
    )


def said_plainly(text):
    """No traceback and no server path in what a person reads."""
    assert "Traceback" not in text and 'File "' not in text, text
    assert not PATHLIKE.search(text), text


# -- item 1: a grading step with nothing to do, and one that fails --------------------------------------------


def test_feedback_right_after_release_says_nothing_is_graded_yet(hub):
    out = cli(hub, "assignments", "release", MOOC, "ps1-digits")
    assert out.returncode == 0, out.stderr
    out = cli(hub, "assignments", "feedback", MOOC, "ps1-digits")  # the README's next line
    assert out.returncode != 0
    assert "Nothing graded yet for ps1-digits: collect and autograde first" in out.stderr, out.stderr
    said_plainly(out.stdout + out.stderr)
    r = hub.service("POST", f"courses/{MOOC}/assignments/ps1-digits/feedback")  # what the course page posts
    assert r.status_code == 409, r.text
    assert r.json()["reason"] == "nothing-graded"
    said_plainly(r.json()["message"])


def test_feedback_of_an_assignment_never_released_says_release_first(hub):
    r = hub.service("POST", f"courses/{GPU_COURSE}/assignments/ps1-matmul/feedback")
    assert r.status_code == 404, r.text
    assert "ps1-matmul is not released yet" in r.json()["message"]
    said_plainly(r.json()["message"])


def test_a_failed_step_says_so_in_one_short_sentence_and_logs_the_details(hub):
    out = cli(hub, "assignments", "release", MOOC, BROKEN_ASSIGNMENT)
    assert out.returncode != 0
    said_plainly(out.stdout + out.stderr)
    assert f"Releasing {BROKEN_ASSIGNMENT} failed" in out.stderr, out.stderr
    ref = re.search(r"reference ([0-9a-f]{8})", out.stderr)
    assert ref, out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr
    r = hub.service("POST", f"courses/{MOOC}/assignments/{BROKEN_ASSIGNMENT}/release")
    assert r.status_code == 500 and r.json()["reason"] == "step-failed", r.text
    said_plainly(r.json()["message"])
    # the details (nbgrader's log, with its paths) are in the service's log, under the reference
    log = hub.logs()
    at = log.index(f"failed (reference {ref.group(1)})")
    assert "notebook.ipynb" in log[at : at + 20000]


# -- item 5: a stock client's spawn with no body --------------------------------------------------------------


def spawn_without_body(hub, name):
    """POST .../server with no body (jupyterhub-client, the admin page's Start Server); (response, progress)."""
    hub.ensure_user(name)
    result = {}
    poster = threading.Thread(target=lambda: result.update(r=hub.api("POST", f"users/{name}/server")))
    poster.start()
    deadline = time.monotonic() + 30
    while not (hub.server_model(name) or {}).get("pending") and poster.is_alive():
        assert time.monotonic() < deadline, f"{name}'s spawn never showed as pending"
        time.sleep(0.05)
    events = []
    if (hub.server_model(name) or {}).get("pending"):
        with requests.get(
            f"{hub.url}/hub/api/users/{name}/server/progress",
            stream=True,
            timeout=120,
            headers={"Authorization": f"token {ADMIN_TOKEN}"},
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith(b"data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("ready") or events[-1].get("failed"):
                        break
    poster.join()
    return result["r"], [e.get("message", "") for e in events]


def test_a_spawn_with_no_body_starts_the_only_course_and_says_which(hub):
    r, said = spawn_without_body(hub, "newbie")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("newbie")
    assert any("No course given: starting Deep Learning Basics (the only course open to you)" in m for m in said), said
    assert hub.run_in_kernel("newbie", "import os; print(os.environ['AIFHUB_COURSE'])").strip() == MOOC
    hub.stop_server("newbie")


def test_a_spawn_with_no_body_starts_the_course_started_last(hub):
    # newbie's first start named no course (the test above): JupyterHub kept no options; the service remembers
    r, said = spawn_without_body(hub, "newbie")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("newbie")
    assert any("starting Deep Learning Basics (the course you started last)" in m for m in said), said
    hub.stop_server("newbie")
    # a learner who once named a course: JupyterHub passes the options it kept, and that course starts again
    assert hub.spawn("learner2", MOOC).status_code in (201, 202)  # on the GPU course's roster, but took the MOOC
    hub.stop_server("learner2")
    r, said = spawn_without_body(hub, "learner2")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("learner2")
    assert f"Checking course {MOOC}" in said, said
    hub.stop_server("learner2")


def test_a_spawn_with_no_body_and_several_courses_asks_to_choose(hub):
    hub.ensure_user("instructor")
    r = hub.api("POST", "users/instructor/server")
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert 'Choose a course to start (send {"course": "<id>"}); yours:' in message, message
    assert MOOC in message and GPU_COURSE in message


# -- item 2: a stop while JupyterLab loads is bounded, and frees the GPU -----------------------------------------


def test_a_stop_while_jupyterlab_loads_is_bounded_and_frees_the_gpu(hub):
    hub.ensure_user("learner1")
    since = len(hub.logs())
    # JupyterHub answers a start only when it is done or slow (10 s): the request waits in a thread of its own
    answers = []
    start = threading.Thread(
        target=lambda: answers.append(hub.api("POST", "users/learner1/server", json={"course": GPU_COURSE}))
    )
    start.start()
    deadline = time.monotonic() + 60
    while "Spawn learner1: Sandbox process started; JupyterLab is loading" not in hub.logs()[since:]:
        assert time.monotonic() < deadline, "the sandbox process never started"
        time.sleep(0.05)
    model = hub.server_model("learner1")
    assert model and not model["ready"], "the sandbox was up before the stop: nothing to test"
    t0 = time.monotonic()
    r = hub.api("DELETE", "users/learner1/server")
    assert r.status_code in (202, 204), r.text
    start.join(60)
    assert answers, "the start request never ended"  # JupyterHub answers a start that a stop cancelled with 500
    while hub.server_model("learner1") is not None:
        assert time.monotonic() - t0 < 30, "the stop did not end"
        time.sleep(0.05)
    took = time.monotonic() - t0
    # JupyterHub waits 1 s after cancelling a pending spawn; then SIGTERM (2 s at most) and SIGKILL (1 s)
    assert took <= 5.0, f"the stop took {took:.1f} s"
    # the GPU is free again at once: another learner on the roster gets it without waiting in line
    r = hub.spawn("learner2", GPU_COURSE, wait=False)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("learner2")
    hub.stop_server("learner2")


# -- item 7: a second installation with the same uid ranges ---------------------------------------------------


def test_a_second_installation_with_the_same_ranges_is_refused_with_what_to_do(hub, hub_dir):
    env = dict(os.environ, AIFHUB_DEMO_PASSWORD="x" * 12, AIFHUB_SERVICE_ARGS=" ".join(worker_id_ranges()))
    out = subprocess.run(
        [sys.executable, "-m", "aifhub", "up", "--gpus", "none", "--port", str(free_port())]
        + ["--state-dir", str(hub_dir / "second")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"in use by the aifhub with the state directory {hub.state_dir}" in out.stderr, out.stderr
    assert "--AifhubService.first_uid=<first id>" in out.stderr and "AIFHUB_SERVICE_ARGS" in out.stderr
    assert not (hub_dir / "second" / "jupyterhub.sqlite").exists()  # nothing was started


HOLDER = """
import sys
from aifhub import idranges
idranges.RangeLocks(sys.argv[1], idranges.configured(sys.argv[2])).claim()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_lock_left_by_a_dead_installation_does_not_block(hub_dir):
    tmp_path = hub_dir  # traversable by learners' uids, as `aifhub up` checks
    args = (
        "--AifhubService.first_uid=2900000 --GradingManager.first_uid=2910000 --GradingManager.first_course_gid=2920000"
    )
    env = dict(os.environ, AIFHUB_DEMO_PASSWORD="x" * 12, AIFHUB_SERVICE_ARGS=args)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "dead"), args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert holder.stdout.readline().strip() == "held"
    config = tmp_path / "stops.py"
    config.write_text("raise SystemExit(3)  # the hub stops at once: only the range check matters here\n")

    def up():
        return subprocess.run(
            [sys.executable, "-m", "aifhub", "up", "--gpus", "none", "--port", str(free_port())]
            + ["--state-dir", str(tmp_path / "next"), "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env=env,
        )

    out = up()
    assert out.returncode == 2 and f"state directory {tmp_path / 'dead'}" in out.stderr, out.stderr
    holder.send_signal(signal.SIGKILL)  # dies without a word; its lock files stay behind
    holder.wait()
    out = up()
    assert "in use by" not in out.stderr, out.stderr  # past the check: the hub itself then stops (its config)


# -- item 11: a tiny quota's figures are true -------------------------------------------------------------------


def test_a_tiny_quota_reads_true_figures(hub):
    hub.ensure_user("quota1")
    r = hub.api("POST", "users/quota1/server", json={"course": TINY})
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + 120
    while hub.server_model("quota1") is not None:  # the metering stops it once its 10.8 s are used
        assert time.monotonic() < deadline, "the sandbox ran on past its quota"
        time.sleep(0.5)
    r = hub.spawn("quota1", TINY, wait=False)
    assert r.status_code == 403, r.text
    message = r.json()["message"]
    assert re.search(r"used up \(0\.0\d+ of 0\.003 GPU-hours used this day\)", message), message
    assert "0.00 of 0.00" not in message


@pytest.mark.parametrize(
    "line, shown",
    [
        ("FileNotFoundError: No such file: '/srv/aifhub/grading/dl-basics/source/ps1/x.ipynb'", "'…/x.ipynb'"),
        ("see file:///srv/a/b.ipynb", "see …/b.ipynb"),
        ("score 5 / 10, 3/4 of http://example.org/a/b", "score 5 / 10, 3/4 of http://example.org/a/b"),
    ],
)
def test_server_paths_are_cut_to_the_file_name(line, shown):
    from aifhub.grading.failures import scrub

    assert shown in scrub(line) and "/srv/" not in scrub(line)
