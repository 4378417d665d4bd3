"""nbgrader courses end to end on a real hub: the trusted exchange, instructors' CLI, and sandboxed,
parallel autograding (isolation, timeouts, memory limits)."""

import csv
import io
import json
import os
import re
import subprocess

import nbformat
import pytest
import requests
from conftest import AS_ROOT, start_hub
from hubrunner import grading_uids
from gradingkit import (
    ASSIGNMENT,
    COURSE,
    PROBE_PRELUDE,
    archive,
    instructor_cli,
    nbgrader_in_kernel,
    notebook_b64,
    solution_notebook,
    submit,
    wait_jobs,
    with_cell,
    with_extra_cells,
)

SERVICE_ARGS = (
    "--GradingManager.workers=2 --GradingManager.cell_timeout=5 --GradingManager.notebook_timeout=20 "
    "--GradingManager.memory_limit=1G --GradingManager.max_submission_size=2M"
)


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="none", env={"AIFHUB_SERVICE_ARGS": SERVICE_ARGS})
    yield hub
    hub.stop()


@pytest.fixture
def enrolled(hub):
    """alice and bob in the open course (the end-to-end test enrols them by spawning; a test run on its own,
    or after that one failed, must not find them strangers)."""
    for name in ("alice", "bob"):
        r = hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for(name), json={})
        assert r.status_code in (200, 201), r.text


@pytest.fixture
def released(hub):
    """The assignment released (again: releasing is idempotent), for tests run on their own."""
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release")
    assert r.status_code == 200, r.text


def test_release_collect_autograde_feedback_end_to_end(hub):
    out = instructor_cli(hub, "assignments", "release", COURSE, ASSIGNMENT)
    assert f"Released {COURSE}/{ASSIGNMENT}: {ASSIGNMENT}" in out.stdout

    for name in ("alice", "bob"):
        r = hub.spawn(name, COURSE)
        assert r.status_code in (201, 202), r.text
    listed = nbgrader_in_kernel(hub, "alice", "list")
    assert "RC 0" in listed and f"{COURSE} {ASSIGNMENT}" in listed, listed
    for name in ("alice", "bob"):
        fetched = nbgrader_in_kernel(hub, name, "fetch_assignment", ASSIGNMENT)
        assert "RC 0" in fetched, fetched
    listed = nbgrader_in_kernel(hub, "alice", "list")
    assert "(already downloaded)" in listed, listed
    # fetching it again is refused, as nbgrader refuses it, and leaves nothing in the sandbox's temporary folder
    again = hub.run_in_kernel(
        "alice",
        "import os, subprocess, tempfile\nd = tempfile.mkdtemp()\n"
        f"r = subprocess.run(['nbgrader', 'fetch_assignment', {ASSIGNMENT!r}], capture_output=True, text=True, "
        "env=dict(os.environ, TMPDIR=d))\nprint('RC', r.returncode)\nprint(r.stderr[-600:])\nprint('LEFT', os.listdir(d))",
        timeout=120,
    )
    assert "RC 0" not in again and "already have a copy" in again and "LEFT []" in again, again

    # alice hands in the solution; bob the notebook as fetched
    write = (
        f"import base64\nopen('{ASSIGNMENT}/{ASSIGNMENT}.ipynb', 'wb').write("
        f"base64.b64decode('{notebook_b64(solution_notebook())}'))"
    )
    hub.run_in_kernel("alice", write)
    for name in ("alice", "bob"):
        submitted = nbgrader_in_kernel(hub, name, "submit", ASSIGNMENT)
        assert "RC 0" in submitted and f"Submitted as: {COURSE} {ASSIGNMENT}" in submitted, submitted
    cached = nbgrader_in_kernel(hub, "bob", "list", "--cached")
    assert f"{COURSE} bob {ASSIGNMENT}" in cached and "(no feedback available)" in cached, cached

    out = instructor_cli(hub, "assignments", "collect", COURSE, ASSIGNMENT)
    assert "Collected 2 submission(s)" in out.stdout and "alice" in out.stdout and "bob" in out.stdout
    out = instructor_cli(hub, "assignments", "autograde", COURSE, ASSIGNMENT, "--json")
    jobs = {j["student_id"]: j for j in json.loads(out.stdout)["jobs"]}
    assert jobs["alice"]["state"] == "done" and jobs["alice"]["score"] == jobs["alice"]["max_score"] == 10, jobs
    assert jobs["bob"]["state"] == "done" and jobs["bob"]["score"] == 0, jobs
    out = instructor_cli(hub, "assignments", "feedback", COURSE, ASSIGNMENT)
    assert "alice" in out.stdout and "bob" in out.stdout

    grades = {
        row["student_id"]: row
        for row in csv.DictReader(io.StringIO(instructor_cli(hub, "grades", "export", COURSE).stdout))
    }
    assert float(grades["alice"]["score"]) == float(grades["alice"]["max_score"]) == 10.0
    assert float(grades["bob"]["score"]) == 0.0

    for name in ("alice", "bob"):
        got = nbgrader_in_kernel(hub, name, "fetch_feedback", ASSIGNMENT)
        assert "RC 0" in got, got
        # the Source nbgrader logs is where the feedback came from: it answers the learner's token
        source = re.search(r"Source: (\S+)", got).group(1)
        fetched = requests.get(source, timeout=30, headers={"Authorization": f"token {hub.token_for(name)}"})
        assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "application/gzip", (source, got)
        listing = hub.run_in_kernel(name, "import glob; print(sorted(glob.glob('ps1-digits/feedback/*/*.html')))")
        assert f"{ASSIGNMENT}.html" in listing, listing
    alice_fb = hub.run_in_kernel(
        "alice", "import glob; print(open(glob.glob('ps1-digits/feedback/*/*.html')[0]).read())"
    )
    bob_fb = hub.run_in_kernel("bob", "import glob; print(open(glob.glob('ps1-digits/feedback/*/*.html')[0]).read())")
    assert "10.0 / 10.0" in alice_fb.replace("(", " ").replace(")", " ") or "10 / 10" in alice_fb, alice_fb[:500]
    assert alice_fb != bob_fb
    cached = nbgrader_in_kernel(hub, "bob", "list", "--cached")
    assert "(feedback already fetched)" in cached, cached

    # what JupyterLab's Assignments tab asks the sandbox's nbgrader extension
    tab = requests.get(
        f"{hub.url}/user/alice/assignments?course_id={COURSE}",
        timeout=60,
        headers={"Authorization": f"token {hub.token_for('alice')}"},
    ).json()
    assert tab["success"], tab
    states = {(a["assignment_id"], a["status"]) for a in tab["value"]}
    assert (ASSIGNMENT, "fetched") in states and (ASSIGNMENT, "submitted") in states, tab
    submitted = next(a for a in tab["value"] if a["status"] == "submitted")
    assert submitted["submissions"][-1]["has_local_feedback"], submitted
    courses = requests.get(
        f"{hub.url}/user/alice/courses", timeout=60, headers={"Authorization": f"token {hub.token_for('alice')}"}
    ).json()
    assert courses == {"success": True, "value": [COURSE]}, courses


def test_a_learner_cannot_act_as_another_or_in_another_course(hub, enrolled, released):
    alice = hub.token_for("alice")
    nb = solution_notebook()
    as_bob = submit(hub, "alice", nb, student="bob")
    assert as_bob.status_code == 403 and "only hand in as yourself" in as_bob.json()["message"]
    spoofed = nbgrader_in_kernel(hub, "alice", "submit", ASSIGNMENT, "--student=bob")
    assert "RC 0" not in spoofed and "403" in spoofed, spoofed

    fb = hub.service("GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback?student=bob", token=alice)
    assert fb.status_code == 403, fb.text
    theirs = nbgrader_in_kernel(hub, "alice", "fetch_feedback", ASSIGNMENT, "--student=bob")
    assert "RC 0" not in theirs and "403" in theirs, theirs
    own = hub.service("GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback", token=alice)
    assert own.status_code == 200 and own.headers["Content-Type"] == "application/gzip"

    other = hub.service("GET", "courses/gpu-fundamentals/assignments", token=alice)
    assert other.status_code == 403, other.text
    files = hub.service("GET", "courses/gpu-fundamentals/assignments/ps1-matmul/files", token=alice)
    assert files.status_code == 403
    stranger = hub.service("GET", f"courses/{COURSE}/assignments", token=hub.token_for("stranger"))
    assert stranger.status_code == 403 and "not a member" in stranger.json()["message"]

    for action in ("release", "collect", "autograde", "feedback"):
        r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/{action}", token=alice)
        assert r.status_code == 403 and "Only instructors" in r.json()["message"], (action, r.text)
    assert hub.service("GET", f"courses/{COURSE}/grades", token=alice).status_code == 403
    assert hub.service("GET", f"courses/{COURSE}/jobs", token=alice).status_code == 403


def test_submissions_over_the_course_limit_get_a_clear_413(hub, enrolled, released):
    big = archive({f"{ASSIGNMENT}.ipynb": solution_notebook(), "data.bin": os.urandom(3 * 1000 * 1000)})
    r = hub.service(
        "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions", token=hub.token_for("alice"), data=big
    )
    assert r.status_code == 413, r.text
    assert "over this course's limit of 2.0 MB" in r.json()["message"]
    bomb = archive({f"{ASSIGNMENT}.ipynb": solution_notebook(), "zeros.bin": bytes(5 * 1000 * 1000)})  # compresses well
    assert len(bomb) < 2_000_000
    r = hub.service(
        "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions", token=hub.token_for("alice"), data=bomb
    )
    assert r.status_code == 413 and "larger than this course's limit" in r.json()["message"], r.text
    bad = hub.service(
        "POST",
        f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
        token=hub.token_for("alice"),
        data=b"not a tar",
    )
    assert bad.status_code == 400 and "not a tar.gz" in bad.json()["message"]


def probe_cell(hub):
    """Solution of Part A, preceded by attempts to get at what a submission must never see."""
    state = hub.state_dir
    service_port = json.loads((state / "ports.json").read_text())["service"]
    return (
        PROBE_PRELUDE
        + f"""
attempt("gradebook", lambda: open({str(state / "grading" / COURSE / "gradebook.db")!r}, "rb").read(16))
attempt("other submissions", lambda: os.listdir({str(state / "grading" / COURSE / "submitted")!r}))
attempt("alice's submission", lambda: open({str(state / "grading" / COURSE / "submitted" / "alice" / ASSIGNMENT / (ASSIGNMENT + ".ipynb"))!r}).read(10))
attempt("inbound", lambda: os.listdir({str(state / "grading" / COURSE / "exchange" / "inbound")!r}))
attempt("hub secrets", lambda: open({str(state / "secrets" / "internal_token")!r}).read())
attempt("hub database", lambda: open({str(state / "jupyterhub.sqlite")!r}, "rb").read(16))
attempt("parent environment", lambda: open("/proc/%d/environ" % os.getppid(), "rb").read(16) or 1 / 0)
attempt("environment secrets", env_secret)
def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.close()
    return port
attempt("network to the hub", lambda: connect({hub.port}))
attempt("network to the service", lambda: connect({service_port}))
attempt("network outside", lambda: connect(53) and socket.create_connection(("1.1.1.1", 53), timeout=3))
print("UID", os.getuid())
"""
        + solution_notebook().cells[3].source
    )


def test_sandboxed_grading_isolation_timeouts_memory(hub, released):
    for name in ("mallory", "loopy", "stubborn", "sleepy", "hog", "crasher", "carol"):
        assert hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for(name)).status_code == 201
    nb = solution_notebook()
    submissions = {
        "mallory": with_cell(nb, "softmax", probe_cell(hub)),
        "loopy": with_cell(nb, "accuracy", "while True:\n    pass\n"),  # interrupted at the per-cell limit
        "stubborn": with_cell(
            nb, "accuracy", "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n"
        ),  # ignores interrupts: every later cell waits
        "sleepy": with_extra_cells(nb, ["import time\ntime.sleep(4)"] * 6),  # each cell in time, all too slow
        "hog": with_cell(nb, "accuracy", "hoard = []\nwhile True:\n    hoard.append(bytearray(50 * 1024 * 1024))\n"),
        "crasher": with_cell(nb, "accuracy", "import os\nos.kill(os.getpid(), 9)\n"),
        "carol": nb,
    }
    for name, notebook in submissions.items():
        r = submit(hub, name, notebook)
        assert r.status_code == 201, r.text
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.service(
        "POST",
        f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde",
        json={"students": ["sleepy", "stubborn", "mallory", "loopy", "hog", "crasher", "carol"]},
    )
    assert r.status_code == 202, r.text
    jobs = wait_jobs(hub, [j["id"] for j in r.json()["jobs"]])

    mallory = jobs["mallory"]
    assert mallory["state"] == "done" and mallory["score"] == 10, mallory
    graded = hub.state_dir / "grading" / COURSE / "autograded" / "mallory" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    text = "".join(
        o.get("text", "") for c in nbformat.read(str(graded), as_version=4).cells for o in c.get("outputs", [])
    )
    attempts = [line for line in text.splitlines() if line.startswith("ATTEMPT")]
    assert len(attempts) == 11, text
    assert all(" failed " in line for line in attempts), "\n".join(attempts)
    if AS_ROOT:
        uid = int(text.split("UID ")[1].split()[0])
        assert uid in grading_uids(), uid

    loopy = jobs["loopy"]
    assert loopy["state"] == "done" and loopy["reason"] == "cell-timeout", loopy
    assert "per-cell limit" in loopy["detail"] and loopy["score"] == 5, loopy  # Parts C and D need accuracy()
    stubborn = jobs["stubborn"]
    assert stubborn["state"] == "failed" and stubborn["reason"] == "timeout", stubborn["detail"]
    assert "did not stop when interrupted" in stubborn["detail"], stubborn
    sleepy = jobs["sleepy"]  # every cell within the per-cell limit: the whole-submission limit stops it
    assert sleepy["state"] == "failed" and sleepy["reason"] == "timeout", sleepy["detail"]
    assert "20 s limit for a whole submission" in sleepy["detail"], sleepy
    hog = jobs["hog"]
    assert hog["state"] == "done" and hog["reason"] == "out-of-memory" and hog["score"] == 5, hog
    assert "memory limit (1G)" in hog["detail"], hog
    crasher = jobs["crasher"]
    assert crasher["state"] == "failed" and crasher["reason"] == "kernel-died", crasher
    assert "the kernel died" in crasher["detail"], crasher
    carol = jobs["carol"]
    assert carol["state"] == "done" and carol["score"] == 10, carol

    shown = instructor_cli(hub, "assignments", "jobs", COURSE).stdout
    assert "stubborn" in shown and "failed" in shown and "cell-timeout" in shown
    ps = subprocess.run(["ps", "-eo", "uid=,stat=,args="], capture_output=True, text=True).stdout.splitlines()
    left = [line for line in ps if int(line.split()[0]) in grading_uids() and not line.split()[1].startswith("Z")]
    assert not left, f"grading processes were left running: {left}"


@pytest.mark.skipif(not AS_ROOT, reason="course groups for instructors' sandboxes need the hub to run as root")
def test_instructor_grades_by_hand_in_formgrader_in_their_sandbox(hub, released):
    if not hub.service("GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions").json()["submissions"]:
        hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for("carol"))
        assert submit(hub, "carol", solution_notebook()).status_code == 201
        hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect")
    r = hub.spawn("instructor", COURSE)
    assert r.status_code in (201, 202), r.text
    token = hub.token_for("instructor")
    got = requests.get(
        f"{hub.url}/user/instructor/formgrader/api/assignments", headers={"Authorization": f"token {token}"}, timeout=60
    )
    assert got.status_code == 200, got.text[:300]
    assignments = {a["name"]: a for a in got.json()}
    assert assignments[ASSIGNMENT]["num_submissions"] >= 1, assignments
    # a learner's sandbox sees none of it
    hub.ensure_user("alice")
    if hub.server_model("alice") is None:
        hub.spawn("alice", COURSE)
    probe = f"import os\ntry:\n    os.listdir({str(hub.state_dir / 'grading' / COURSE)!r})\n    print('LISTED')\nexcept PermissionError:\n    print('denied')"
    assert hub.run_in_kernel("alice", probe).strip() == "denied"
    hub.stop_server("instructor")
