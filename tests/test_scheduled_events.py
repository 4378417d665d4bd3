"""Scheduled events through a real `aifhub up`: the idle rule (warning, grace, stop, the charge ending where
the idleness began, files kept) and sandboxes warmed before a session and handed to learners."""

import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import AS_ROOT, start_hub

IDLE_COURSE = """\
id: idle-lab
title: Idle Lab
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {image: cpu-base, cpu: 1, memory: 2G, max_session: 1h}
allocation: EHPC-AIF-2026-PG01
idle: {after: 8s, grace: 6s}
"""
WARM_COURSE = """\
id: warm-lab
title: Warm Lab
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {{image: cpu-base, cpu: 1, memory: 2G, max_session: 1h}}
allocation: EHPC-AIF-2026-PG01
sessions:
  - {{start: "{start}", end: "{end}", expected: 2}}
"""
WARM_KEEP_S = 70  # unused warm sandboxes go this long after the session's start
SERVICE_ARGS = f"--WarmPool.interval=1 --WarmPool.keep={WARM_KEEP_S}"
CONFIG = """\
from aifhub.hubside.embedded import configure
configure(c)  # noqa: F821
c.Spawner.environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = "2"  # sandboxes report their activity every 2 s
"""


def add_courses(courses):
    (courses / "idle-lab").mkdir()
    (courses / "idle-lab" / "course.yaml").write_text(IDLE_COURSE)
    start = datetime.now(timezone.utc) + timedelta(seconds=30)  # the session starts as the hub is up: warm now
    (courses / "warm-lab").mkdir()
    (courses / "warm-lab" / "course.yaml").write_text(
        WARM_COURSE.format(start=start.isoformat(), end=(start + timedelta(hours=2)).isoformat())
    )
    add_courses.session_start = start


@pytest.fixture(scope="module")
def hub(hub_dir):
    config = hub_dir / "jupyterhub_config.py"
    config.write_text(CONFIG)
    hub = start_hub(
        hub_dir,
        gpus="none",
        prepare_courses=add_courses,
        extra_args=("--config", str(config)),
        env={"AIFHUB_SERVICE_ARGS": SERVICE_ARGS},
    )
    yield hub
    hub.stop()


def iso(text):
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def test_an_idle_sandbox_is_warned_then_stopped_and_charged_up_to_where_idleness_began(hub):
    for name in ("idler", "worker"):
        r = hub.spawn(name, "idle-lab")
        assert r.status_code in (201, 202), r.text
    hub.run_in_kernel("idler", "open('keep-me.txt', 'w').write('still here')")
    token = hub.token_for("idler")
    warned = stopped = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and stopped is None:
        hub.run_in_kernel("worker", "1 + 1")  # the other learner keeps working
        me = hub.service("GET", "me", token=token).json()
        if warned is None and "is idle: it stops at" in (me["notice"] or ""):
            warned = time.monotonic()
        if hub.server_model("idler") is None:
            stopped = time.monotonic()
        time.sleep(1)
    assert warned is not None, "the idle learner was never warned"
    assert stopped is not None and stopped - warned >= 4, (warned, stopped)  # the grace (6 s), give or take a pass
    assert hub.server_model("worker")["ready"], "a learner at work was stopped"
    me = hub.service("GET", "me", token=token).json()
    assert me["stopped"] and "idle" in me["stopped"][0]["reason"] and "files are kept" in me["stopped"][0]["reason"]
    assert (hub.state_dir / "work" / "idler" / "idle-lab" / "keep-me.txt").read_text() == "still here"

    session = hub.service("GET", "usage?user=idler&format=json").json()["sessions"][-1]
    charged_s = session["cpu_ms"] / 1000  # one CPU: CPU-seconds are seconds
    ran_s = (iso(session["end"]) - iso(session["start"])).total_seconds()
    assert 0 < charged_s < ran_s - 8, session  # not the 8 s idle nor the grace after the last activity
    hub.stop_server("worker")


def warm_sandboxes(hub, state=None):
    return [w for w in hub.service("GET", "pool").json()["warm"] if state is None or w["state"] == state]


@pytest.mark.skipif(not AS_ROOT, reason="warm sandboxes run in cgroups and namespaces: the service must run as root")
def test_a_warm_sandbox_serves_a_spawn_and_the_course_pays_for_the_warm_time(hub):
    deadline = time.monotonic() + 90
    while len(warm_sandboxes(hub, "ready")) < 2:  # as many as the session expects
        assert time.monotonic() < deadline, f"no warm sandboxes: {warm_sandboxes(hub)}"
        time.sleep(0.5)
    response, events = hub.progress_events("early-bird", "warm-lab")
    assert response.status_code in (201, 202), response.text
    messages = [e.get("message", "") for e in events]
    assert any("started ahead of this session" in m for m in messages), messages
    assert events[-1].get("ready"), events[-1]
    out = hub.run_in_kernel(
        "early-bird",
        "import os; print(os.getuid(), os.getcwd(), os.environ['AIFHUB_COURSE'], os.environ['JUPYTERHUB_USER'])",
    )
    uid, cwd, course, user = out.split()
    assert int(uid) >= 200000 and cwd == str(hub.state_dir / "work" / "early-bird" / "warm-lab")
    assert (course, user) == ("warm-lab", "early-bird")
    assert len(warm_sandboxes(hub)) == 1  # one more learner is expected: one stays warm

    usage = hub.service("GET", "usage?course=warm-lab&format=json").json()["sessions"]
    warm = [u for u in usage if u["user"] == "aifhub-warm"]
    mine = [u for u in usage if u["user"] == "early-bird"]
    assert warm and all(u["cpu_ms"] > 0 for u in warm[:1]), usage  # the course paid for the warm time
    assert len(mine) == 1 and mine[0]["start"] >= warm[0]["end"], usage  # the learner pays from the handover
    hub.stop_server("early-bird")


@pytest.mark.skipif(not AS_ROOT, reason="warm sandboxes run in cgroups and namespaces: the service must run as root")
def test_unused_warm_sandboxes_are_released_after_the_session_began(hub):
    closes = add_courses.session_start + timedelta(seconds=WARM_KEEP_S)
    deadline = time.monotonic() + max(0.0, (closes - datetime.now(timezone.utc)).total_seconds()) + 30
    while warm_sandboxes(hub):
        assert time.monotonic() < deadline, warm_sandboxes(hub)
        time.sleep(1)
    usage = hub.service("GET", "usage?user=aifhub-warm&format=json").json()["sessions"]
    assert usage and all(u["state"] == "ended" for u in usage), usage
