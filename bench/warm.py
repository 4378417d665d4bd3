"""Start to a usable notebook with a warm sandbox (a course whose session is on now) against plain JupyterHub
in the same run, and aifhub's cold start of the same kind of course beside them.

"Usable" is JupyterLab's page served to the learner (``GET /user/NAME/lab`` answering 200), timed from
``POST /hub/api/users/NAME/server``. Sides alternate which goes first each round.
"""

import shutil
import statistics
import time
from datetime import datetime, timedelta, timezone

import requests

from .hubs import REPO, BenchError, RunningHub, request_spawn, running, stop_server, user_token, worker_id_ranges

WARM_COURSE = """\
id: warm-bench
title: Warm Bench
description: Deep Learning Basics with a session on now (the warm-sandbox benchmark).
kind: mooc
enrollment: open
instructors: [instructor]
sandbox: {{image: cpu-base, cpu: 2, memory: 4G, max_session: 2h}}
allocation: EHPC-AIF-2026-PG01
sessions:
  - {{start: "{start}", end: "{end}", expected: {expected}}}
"""


def warm_hub(workdir, expected):
    """An ``aifhub up`` whose course ``warm-bench`` has a session on now, expecting ``expected`` learners."""
    courses = workdir / "courses"
    shutil.copytree(REPO / "courses", courses)
    (workdir / "sandbox_images").symlink_to(REPO / "sandbox_images")
    now = datetime.now(timezone.utc)
    (courses / "warm-bench").mkdir()
    (courses / "warm-bench" / "course.yaml").write_text(
        WARM_COURSE.format(start=now.isoformat(), end=(now + timedelta(hours=2)).isoformat(), expected=expected)
    )
    hub = RunningHub(
        workdir / "state",
        courses,
        gpus="none",
        log_path=workdir / "aifhub-up.log",
        # it runs beside the suite's aifhub: ids of its own (`aifhub up` refuses ranges another hub holds)
        env={"AIFHUB_SERVICE_ARGS": " ".join(["--WarmPool.interval=1", *worker_id_ranges(second=True)])},
        meter_interval=60,
    )
    hub.kind = "aifhub"
    return hub


def usable(hub, name, course, timeout=240):
    """Seconds from the spawn request to JupyterLab's page (the user exists and has a token)."""
    token = user_token(hub, name)
    t0 = time.monotonic()
    r = request_spawn(hub, name, token, course)
    if r.status_code not in (201, 202):
        raise BenchError(f"{hub.kind}: spawning {name} answered {r.status_code}: {r.text[:300]}")
    deadline = t0 + timeout
    with requests.Session() as s:
        s.headers["Authorization"] = f"token {token}"
        while time.monotonic() < deadline:
            try:
                if s.get(f"{hub.url}/user/{name}/lab", timeout=30, allow_redirects=False).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.05)
    raise BenchError(f"{hub.kind}: {name}'s JupyterLab not served after {timeout}s")


def warm_pool_ready(hub, count, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        warm = hub.service("GET", "pool").json().get("warm", [])
        if sum(1 for w in warm if w["state"] == "ready") >= count:
            return
        time.sleep(0.5)
    raise BenchError(f"the warm pool did not get {count} sandboxes ready in {timeout}s")


def warm_vs_cold(workdir, aif, plain, runs=5):
    """Median seconds to a usable notebook: warm (aifhub), plain JupyterHub, and aifhub cold (``aif``, dl-basics)."""
    times = {"warm": [], "plain": [], "cold": []}
    workdir.mkdir(parents=True, exist_ok=True)
    with running(warm_hub(workdir, expected=runs)) as warm:
        if not warm.service("GET", "pool").json().get("warm") and not _can_warm(warm):
            raise BenchError("warm sandboxes need the service to run as root with bubblewrap and cgroups")
        warm_pool_ready(warm, min(runs, 2))
        for i in range(runs):
            order = [("warm", warm, "warm-bench"), ("plain", plain, None), ("cold", aif, "dl-basics")]
            if i % 2:
                order.reverse()
            for side, hub, course in order:
                if side == "warm":
                    warm_pool_ready(warm, 1)
                name = f"warm{i}"
                times[side].append(usable(hub, name, course))
                stop_server(hub, name)
                time.sleep(0.5)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "runs": runs,
        "median_s": med,
        "all": times,
        "ratio": med["warm"] / med["plain"],
        "cold_ratio": med["cold"] / med["plain"],
    }


def _can_warm(hub):
    time.sleep(3)
    return bool(hub.service("GET", "pool").json().get("warm"))
