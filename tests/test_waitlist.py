"""The GPU waitlist through a real `aifhub up` with one GPU (--gpus 0): the second learner waits instead of
being refused, is told their place, gets the device when the first stops (and nothing for the wait), can
leave the line, and keeps their place across a crash of the hub and a restart of the service."""

import os
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from conftest import start_hub

from aifhub.service.waitlist import estimates, service_order

COURSE = "gpu-fundamentals"  # roster: learner1, learner2; max_session 4h; 4 GPU-hours a week each
SECOND_GPU_COURSE = """id: gpu-second
title: Second GPU Course
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {image: pytorch-cuda, gpu: {kind: gpu, count: 1}, max_session: 1h}
allocation: EHPC-AIF-2026-PG01
"""


def add_courses(courses):
    (courses / "gpu-second").mkdir()
    (courses / "gpu-second" / "course.yaml").write_text(SECOND_GPU_COURSE)
    roster = courses / COURSE / "course.yaml"
    roster.write_text(
        roster.read_text().replace("roster: [learner1, learner2]", "roster: [learner1, learner2, learner3]")
    )


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(
        hub_dir, gpus="0", prepare_courses=add_courses, env={"AIFHUB_SERVICE_ARGS": "--AifhubService.waitlist_hold=60"}
    )
    yield hub
    hub.stop()


def me(hub, name):
    return {c["id"]: c for c in hub.service("GET", "me", token=hub.token_for(name)).json()["courses"]}


def in_line(hub, name, course=COURSE, timeout=40):
    """Wait until ``name`` shows a place in ``course``'s line on /me; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        place = me(hub, name)[course]["waitlist"]
        if place:
            return place
        time.sleep(0.3)
    raise AssertionError(f"{name} never showed in the waitlist of {course}")


class Spawn(threading.Thread):
    """A learner's spawn request in the background (it waits in line), with its progress events."""

    def __init__(self, hub, name, course=COURSE):
        super().__init__(daemon=True)
        self.hub, self.name, self.course = hub, name, course
        self.start()

    def run(self):
        self.response, self.events, self.error = None, [], None
        try:
            self.response, self.events = self.hub.progress_events(self.name, self.course)
        except Exception as exc:  # the hub died under it (the crash test)
            self.error = exc

    def result(self, timeout=120):
        self.join(timeout)
        assert not self.is_alive(), f"{self.name}'s spawn did not end"
        return self.response, self.events


def sessions_of(hub, name):
    return hub.service("GET", f"usage?user={name}&format=json").json()["sessions"]


def test_the_second_learner_waits_first_in_line_and_gets_the_gpu_when_the_first_stops(hub):
    r = hub.spawn("learner1", COURSE)
    assert r.status_code in (201, 202), r.text
    second = Spawn(hub, "learner2")
    place = in_line(hub, "learner2")
    assert place["position"] == 1 and place["state"] == "waiting"
    assert 3.5 * 3600 < place["estimate_s"] <= 4 * 3600  # learner1's 4 h session, just begun
    assert not sessions_of(hub, "learner2")  # waiting opens no session: nothing is charged

    waitlist = hub.service("GET", f"waitlist?course={COURSE}", token=hub.token_for("instructor")).json()["waitlist"]
    assert [(e["user"], e["position"]) for e in waitlist] == [("learner2", 1)]
    assert hub.service("GET", f"waitlist?course={COURSE}", token=hub.token_for("learner1")).status_code == 403

    r = hub.api("DELETE", "users/learner1/server")
    assert r.status_code in (202, 204)
    while hub.server_model("learner1") is not None:  # its spawner released the GPU on the way out
        time.sleep(0.05)
    stopped = time.monotonic()
    while True:  # the device goes to learner2 (held, or taken already) within a second
        entry = [x for x in hub.service("GET", "waitlist").json()["waitlist"] if x["user"] == "learner2"]
        if not entry or entry[0]["state"] == "offered":
            break
        assert time.monotonic() - stopped < 1.0, entry
        time.sleep(0.05)
    response, events = second.result()
    assert response.status_code in (201, 202), response.text
    messages = [e.get("message", "") for e in events]
    assert any("you are number 1 in line" in m and "Nothing is charged" in m for m in messages), messages
    assert any("A GPU is free and held for you" in m for m in messages), messages
    assert events[-1].get("ready"), events[-1]
    assert hub.run_in_kernel("learner2", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])").strip() == "0"
    ledger = sessions_of(hub, "learner2")
    assert len(ledger) == 1
    first_stop = max(x["end"] for x in sessions_of(hub, "learner1"))
    assert ledger[0]["start"] >= first_stop  # charged from admission, after the wait
    hub.stop_server("learner2")


def test_a_learner_leaves_the_line_and_a_stopped_spawn_leaves_it_too(hub):
    hub.spawn("learner1", COURSE)
    waiting = Spawn(hub, "learner2")
    assert in_line(hub, "learner2")["position"] == 1
    gone = hub.service("DELETE", f"me/waitlist/{COURSE}", token=hub.token_for("learner2"))
    assert gone.status_code == 204
    response, events = waiting.result()
    assert events[-1].get("failed") and "no longer in the GPU waitlist" in events[-1]["message"], events[-1]
    assert me(hub, "learner2")[COURSE]["waitlist"] is None
    assert hub.service("DELETE", f"me/waitlist/{COURSE}", token=hub.token_for("learner2")).status_code == 404

    stopper = Spawn(hub, "learner3")  # Stop on the spawn page: the spawn is cancelled, the place given up
    assert in_line(hub, "learner3")["position"] == 1
    assert hub.api("DELETE", "users/learner3/server").status_code in (202, 204)
    stopper.result()
    deadline = time.monotonic() + 10
    while me(hub, "learner3")[COURSE]["waitlist"] is not None:
        assert time.monotonic() < deadline, "a stopped spawn kept its place in line"
        time.sleep(0.3)
    hub.stop_server("learner1")


def test_the_line_is_fair_across_courses_and_shown_on_the_admins_page(hub):
    hub.spawn("learner1", COURSE)
    first = Spawn(hub, "learner2")
    assert in_line(hub, "learner2")["position"] == 1
    other = Spawn(hub, "newcomer", "gpu-second")  # a course holding no GPU goes first next time
    place = in_line(hub, "newcomer", "gpu-second")
    assert place["position"] == 1 and in_line(hub, "learner2")["position"] == 2
    page = hub.service("GET", "waitlist").json()["waitlist"]
    assert [(e["user"], e["course"], e["position"]) for e in page] == [
        ("newcomer", "gpu-second", 1),
        ("learner2", COURSE, 2),
    ]
    for name in ("newcomer", "learner2"):
        assert hub.api("DELETE", f"users/{name}/server").status_code in (202, 204)
    first.result(), other.result()
    hub.stop_server("learner1")


def test_the_line_survives_a_crash_of_the_hub_and_a_restart_of_the_service(hub):
    hub.spawn("learner1", COURSE)
    before = Spawn(hub, "learner2")
    assert in_line(hub, "learner2")["position"] == 1
    jupyterhub = int(
        subprocess.run(
            ["pgrep", "-P", str(hub.proc.pid), "-f", "jupyterhub"], capture_output=True, text=True
        ).stdout.split()[0]
    )
    os.kill(jupyterhub, signal.SIGKILL)  # the hub dies (learner1's sandbox lives on); aifhub up exits with it
    hub.proc.wait(30)
    hub.log.close()
    before.join(60)
    hub.start()  # a new hub, and a new service (the old one is stopped as stale)
    assert hub.server_model("learner1")["ready"]
    place = in_line(hub, "learner2")
    assert place["position"] == 1 and place["state"] == "waiting"  # kept, though learner2's spawn died with the hub
    again = Spawn(hub, "learner2")  # learner2 clicks Start again: the same place
    time.sleep(2)
    assert in_line(hub, "learner2")["position"] == 1
    hub.stop_server("learner1")
    response, events = again.result()
    assert events[-1].get("ready"), events[-1]
    hub.stop_server("learner2")


# -- the line, played forward (no hub) ----------------------------------------------


def e(id, course, count=1):
    return SimpleNamespace(id=id, course_id=course, gpu_count=count)


@pytest.mark.parametrize(
    "entries, held, expected",
    [
        ([e(1, "a"), e(2, "a"), e(3, "b")], {}, [1, 3, 2]),  # alternate between courses holding nothing
        ([e(1, "a"), e(2, "a"), e(3, "b")], {"b": 2}, [1, 2, 3]),  # b holds two GPUs already: a's learners first
        ([e(5, "a"), e(2, "b")], {"a": 1, "b": 1}, [2, 5]),  # equal holdings: who came first
        ([e(1, "a", 2), e(2, "b"), e(3, "a")], {}, [1, 2, 3]),
    ],
)
def test_service_order_is_fair_across_courses(entries, held, expected):
    assert [x.id for x in service_order(entries, held)] == expected


def test_estimates_play_the_line_forward_on_the_devices():
    order = [e(1, "a"), e(2, "a"), e(3, "a", 2)]
    got = estimates(order, [100, 300], session_s=lambda entry: 1000)
    assert got == {1: 100, 2: 300, 3: 1300}  # entry 3 needs both: after 1's (1100) and 2's (1300) sessions
    assert estimates([e(1, "a", 3)], [0, 0], lambda entry: 1) == {1: None}  # more than the pool has
