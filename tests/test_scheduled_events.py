"""Scheduled events through a real `aifhub up`: the idle rule (warning, grace, stop, the charge ending where
the idleness began, files kept) and sandboxes warmed before a session and handed to learners."""

import time
from datetime import datetime, timezone

import pytest
from conftest import start_hub

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
CONFIG = """\
from aifhub.hubconfig import configure
configure(c)  # noqa: F821
c.Spawner.environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = "2"  # sandboxes report their activity every 2 s
"""


def add_courses(courses):
    (courses / "idle-lab").mkdir()
    (courses / "idle-lab" / "course.yaml").write_text(IDLE_COURSE)


@pytest.fixture(scope="module")
def hub(hub_dir):
    config = hub_dir / "jupyterhub_config.py"
    config.write_text(CONFIG)
    hub = start_hub(hub_dir, gpus="none", prepare_courses=add_courses, extra_args=("--config", str(config)))
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
