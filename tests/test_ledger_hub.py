"""The ledger in a real hub (--meter-interval 1): a spawn storm against a small allocation, a quota
that runs out while a learner works, and a crash of the hub and the service with sandboxes running."""

import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime

import pytest
import requests
from conftest import start_hub
from hubrunner import ADMIN_TOKEN, PASSWORD

STORM_COURSE = """id: storm
title: Storm Workshop
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {image: pytorch-cuda, gpu: {kind: gpu, count: 1}, cpu: 1, memory: 1G, max_session: 1h}
allocation: STORM-5
"""
TINY_COURSE = """id: tiny
title: Tiny Quota
kind: mooc
enrollment: open
instructors: [instructor]
sandbox: {image: pytorch-cuda, gpu: {kind: gpu, count: 1}, cpu: 1, max_session: 1h}
allocation: EHPC-AIF-2026-PG01
quota:
  per_learner: {gpu_hours: 0.004, window: day}
"""


def add_courses(courses):
    for name, text in (("storm", STORM_COURSE), ("tiny", TINY_COURSE)):
        (courses / name).mkdir()
        (courses / name / "course.yaml").write_text(text)


@pytest.fixture(scope="module")
def hub(hub_dir):
    gpus = ",".join(str(i) for i in range(60))
    hub = start_hub(
        hub_dir,
        gpus=gpus,
        prepare_courses=add_courses,
        meter_interval=1,
        env={"AIFHUB_STOP_GRACE": "5", "AIFHUB_NOTICES_INTERVAL": "1"},
    )
    yield hub
    hub.stop()


def usage(hub, *filters):
    return json.loads(
        hub.cli("usage", "report", "--format", "json", "--state-dir", str(hub.state_dir), *filters).stdout
    )["sessions"]


def test_the_demo_allocation_is_seeded(hub):
    out = json.loads(hub.cli("alloc", "show", "EHPC-AIF-2026-PG01", "--json", "--url", hub.url).stdout)
    assert out["granted_gpu_hours"] == 500 and out["usable"]
    assert set(out["courses"]) >= {"gpu-fundamentals", "dl-basics"}


def test_fifty_learners_at_once_against_an_allocation_for_five(hub):
    hub.cli("alloc", "create", "STORM-5", "--gpu-hours", "5", "--title", "Storm", "--url", hub.url)
    for i in range(50):
        hub.ensure_user(f"storm{i}")
    results = {}
    barrier = threading.Barrier(50)

    def spawn(i):
        barrier.wait()
        results[i] = hub.api("POST", f"users/storm{i}/server", json={"course": "storm"})

    threads = [threading.Thread(target=spawn, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [i for i, r in results.items() if r.status_code in (201, 202)]
    refused = [r for r in results.values() if r.status_code == 403]
    assert len(started) == 5, {
        i: (r.status_code, r.text[:100]) for i, r in results.items() if r.status_code not in (201, 202, 403)
    }
    assert len(refused) == 45 and all("STORM-5" in r.json()["message"] for r in refused)
    shown = json.loads(hub.cli("alloc", "show", "STORM-5", "--json", "--url", hub.url).stdout)
    assert shown["held_gpu_hours"] + shown["used_gpu_hours"] == pytest.approx(5, abs=0.01)
    assert shown["remaining_gpu_hours"] >= -0.01
    metrics = requests.get(
        f"{hub.url}/services/aifhub/metrics", timeout=30, headers={"Authorization": f"token {ADMIN_TOKEN}"}
    ).text
    assert 'aifhub_spawn_refusals_total{reason="allocation-exhausted"} 45.0' in metrics
    assert 'aifhub_allocation_granted_gpu_hours{allocation="STORM-5"} 5.0' in metrics
    for i in started:
        hub.wait_ready(f"storm{i}")
        hub.stop_server(f"storm{i}")
    shown = json.loads(hub.cli("alloc", "show", "STORM-5", "--json", "--url", hub.url).stdout)
    assert shown["held_gpu_hours"] == 0 and 0 < shown["used_gpu_hours"] < 0.1


def test_a_quota_that_runs_out_warns_then_stops_and_refuses(hub):
    token = hub.token_for("quick")
    browser = requests.Session()  # the learner's browser, on the hub's own home page
    browser.get(f"{hub.url}/hub/login", timeout=30)
    browser.post(
        f"{hub.url}/hub/login",
        timeout=30,
        data={"username": "quick", "password": PASSWORD, "_xsrf": browser.cookies.get("_xsrf", path="/hub/")},
    )
    started = time.monotonic()
    r = hub.spawn("quick", "tiny")  # 0.004 GPU-hours = 14.4 s
    assert r.status_code in (201, 202), r.text
    notices, on_hub_page = set(), False
    while hub.server_model("quick") is not None:
        me = hub.service("GET", "me", token=token).json()
        if me["notice"]:
            notices.add(me["notice"].split("%")[0])
            on_hub_page |= "of your GPU-hours for Tiny Quota" in browser.get(f"{hub.url}/hub/home", timeout=30).text
        assert time.monotonic() - started < 60, "the sandbox was never stopped"
        time.sleep(0.5)
    me = hub.service("GET", "me", token=token).json()
    assert notices, "the learner was never warned"
    assert on_hub_page, "the warning never showed on the hub's home page"
    assert me["stopped"] and "used up" in me["stopped"][0]["reason"]
    tiny = next(c for c in me["courses"] if c["id"] == "tiny")
    assert not tiny["can_start"] and "resets on" in tiny["why_not"]

    again = hub.spawn("quick", "tiny")
    assert again.status_code == 403 and "Your GPU-hours for Tiny Quota are used up" in again.json()["message"]
    [session] = usage(hub, "--user", "quick")
    wall = (datetime.fromisoformat(session["end"]) - datetime.fromisoformat(session["start"])).total_seconds()
    assert session["gpu_ms"] == pytest.approx(wall * 1000, abs=1000)  # charged = the time it ran, within an interval
    assert 14_400 <= session["gpu_ms"] <= 14_400 + 2 * 1000  # overdraw at most about one interval


def test_kill_9_of_hub_and_service_loses_and_doubles_nothing(hub):
    names = [f"crash{i}" for i in range(5)]
    for name in names:
        r = hub.spawn(name, "dl-basics", wait=False)
        assert r.status_code in (201, 202), r.text
    for name in names:
        hub.wait_ready(name)
    time.sleep(2)
    service_pid = int((hub.state_dir / "service.pid").read_text())
    jupyterhub = int(
        subprocess.run(["pgrep", "-P", str(hub.proc.pid)], capture_output=True, text=True).stdout.split()[0]
    )
    os.kill(service_pid, signal.SIGKILL)
    os.kill(jupyterhub, signal.SIGKILL)
    hub.proc.wait(30)
    hub.log.close()
    time.sleep(5)  # downtime: the sandboxes keep running, and must be charged for it
    hub.start()
    time.sleep(3)
    for name in names:
        hub.stop_server(name)
    rows = {r["user"]: r for r in usage(hub) if r["user"] in names}
    assert set(rows) == set(names)
    for name, row in rows.items():
        wall = (datetime.fromisoformat(row["end"]) - datetime.fromisoformat(row["start"])).total_seconds()
        assert wall > 10  # spans the downtime
        assert row["cpu_ms"] == pytest.approx(wall * 2 * 1000, abs=2 * 1000 * 1.5), row  # 2 cores, within an interval
        assert row["state"] == "ended"
    import sqlite3

    with sqlite3.connect(hub.state_dir / "aifhub.sqlite") as conn:
        dup = conn.execute(
            "SELECT session_id, seq, COUNT(*) FROM usage_events GROUP BY session_id, seq HAVING COUNT(*) > 1"
        ).fetchall()
        gaps = conn.execute(
            "SELECT a.session_id FROM usage_events a JOIN usage_events b ON a.session_id = b.session_id "
            "AND b.seq = a.seq + 1 WHERE b.start_at != a.end_at"
        ).fetchall()
    assert dup == [] and gaps == []
