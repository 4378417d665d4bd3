"""Stops during a spawn storm: how long from the learner's Stop (``DELETE .../server``) until the server is gone.

``users`` learners ask for a server at the same instant; half of them stop while their sandbox still loads (a
moment after asking: JupyterLab is starting), the other half as soon as theirs is ready, while the rest of
the storm still boots. A stop is done when the hub no longer lists the server: the spawner's ``stop`` has
returned, so on aifhub the session is settled and its GPU free. Against plain JupyterHub's local spawner
(JupyterHub's own 30 s waits after SIGINT and SIGTERM) in the same run.
"""

import random
import threading
import time

from .hubs import request_spawn, server_of, user_token
from .report import Row
from .spawn import _percentile, _stop_all, as_browser

STOP_GOAL_S = 5.0


def stop_storm(hub, users=50, prefix="stop", timeout=300, seed=7):
    names = [f"{prefix}{i:03d}" for i in range(users)]
    tokens = {n: user_token(hub, n) for n in names}
    rng = random.Random(seed)
    pause = {n: rng.uniform(0.5, 3.0) for n in names}  # how long a "stop while loading" learner waits
    stops, loading, failed = {}, set(), {}
    go = threading.Event()

    def gone(name, since, limit):
        while time.monotonic() - since < limit:
            if server_of(hub, name, tokens[name]) is None:
                return time.monotonic() - since
            time.sleep(0.05)
        return None

    def learner(index, name):
        as_browser()
        go.wait()
        try:
            r = request_spawn(hub, name, tokens[name])
            if r.status_code not in (201, 202):
                failed[name] = f"spawn {r.status_code}"
                return
            deadline = time.monotonic() + (pause[name] if index % 2 == 0 else timeout)
            model = server_of(hub, name, tokens[name])
            while time.monotonic() < deadline and model is not None and not model["ready"]:
                time.sleep(0.1)
                model = server_of(hub, name, tokens[name])
            if model is None:
                failed[name] = "stopped before its stop"
                return
            if not model["ready"]:
                loading.add(name)
            t0 = time.monotonic()
            r = hub.api("DELETE", f"users/{name}/server", token=tokens[name])
            if r.status_code not in (202, 204):
                failed[name] = f"stop {r.status_code}"
                return
            took = gone(name, t0, 120)
            if took is None:
                failed[name] = "not stopped after 120 s"
            else:
                stops[name] = took
        except Exception as exc:  # a timeout is a failure the learner sees
            failed[name] = f"request failed: {exc}"

    threads = [threading.Thread(target=learner, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    go.set()
    try:
        for t in threads:
            t.join(timeout)
    finally:
        _stop_all(hub, names)
    took = list(stops.values())
    return {
        "users": users,
        "stops": len(took),
        "while_loading": len(loading & set(stops)),
        "failed": len(failed),
        "p50_s": _percentile(took, 50),
        "p95_s": _percentile(took, 95),
        "p99_s": _percentile(took, 99),
        "max_s": max(took, default=None),
    }


def _cell(r):
    if not r["stops"]:
        return f"no stop measured ({r['failed']} failed)"
    return (
        f"p50 {r['p50_s']:.1f} s, p95 {r['p95_s']:.1f} s, p99 {r['p99_s']:.1f} s, max {r['max_s']:.1f} s "
        f"({r['stops']} stops, {r['while_loading']} while loading, {r['failed']} failed)"
    )


def stop_rows(a, p):
    ratio = a["p99_s"] / p["p99_s"] if a["p99_s"] and p["p99_s"] else None
    met = a["failed"] == 0 and a["p99_s"] is not None and a["p99_s"] <= STOP_GOAL_S
    row = Row(
        f"Stops during a spawn storm of {a['users']} (ratio: p99)",
        _cell(a),
        _cell(p),
        ratio,
        f"none fails; stop p99 <= {STOP_GOAL_S:g} s",
        met,
    )
    return [row], [
        f"- Stops in a storm of {r['users']}, {kind}: {_cell(r)}." for kind, r in (("aifhub", a), ("plain", p))
    ]
