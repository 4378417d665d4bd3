"""Spawning: one learner at a time (overhead against plain JupyterHub) and 20 at once (the storm)."""

import statistics
from collections import Counter
import threading
import time

from .hubs import log_size, request_spawn, stop_server, timed_spawn, user_token, watch_progress


def spawn_overhead(aifhub, plain, runs=7, warmup=1, prefix="ovh"):
    """Median seconds from spawn request to ready, aifhub against plain, alternating which goes first.

    Every run uses a new learner on both hubs (so aifhub's first start for that learner, with
    enrolment and work folder, is what is timed); ``warmup`` rounds are run and not counted.
    """
    times = {"aifhub": [], "plain": []}
    for i in range(warmup + runs):
        order = (aifhub, plain) if i % 2 == 0 else (plain, aifhub)
        for hub in order:
            name = f"{prefix}{i}"
            seconds = timed_spawn(hub, name)
            stop_server(hub, name)
            time.sleep(0.5)  # let the stopped server's teardown finish before the next start
            if i >= warmup:
                times[hub.kind].append(seconds)
    a, p = statistics.median(times["aifhub"]), statistics.median(times["plain"])
    return {"aifhub_s": a, "plain_s": p, "ratio": a / p, "runs": runs,
            "aifhub_all": times["aifhub"], "plain_all": times["plain"]}


def _active_servers(hub):
    """``{name: server model}`` of every user with a server, in one request (cheap to poll in a storm)."""
    r = hub.api("GET", "users?state=active&limit=200")
    r.raise_for_status()
    users = r.json()
    users = users["items"] if isinstance(users, dict) else users
    return {u["name"]: u["servers"].get("") for u in users if u["servers"].get("")}


def spawn_storm(hub, users=20, prefix="storm", timeout=300, poll=0.5):
    """``users`` learners ask for a server at the same instant; who starts, who fails, how long.

    One learner (the last) follows their progress stream while waiting, as the spawn page does.
    """
    names = [f"{prefix}{i:02d}" for i in range(users)]
    tokens = {n: user_token(hub, n) for n in names}
    log_from = log_size(hub)
    watched = names[-1]
    posted, ready, failed = {}, {}, {}
    progress = {}
    go = threading.Event()

    def post(name):
        go.wait()
        try:
            r = request_spawn(hub, name, tokens[name])
        except Exception as exc:  # a timeout is a failure the learner sees
            failed[name] = f"request failed: {exc}"
            return
        posted[name] = time.monotonic()
        if r.status_code == 201:
            ready.setdefault(name, time.monotonic())
        elif r.status_code != 202:
            failed[name] = f"{r.status_code}: {r.text[:200]}"

    def watch():
        go.wait()
        progress["events"] = watch_progress(hub, watched, tokens[watched], timeout, poll=0.2,
                                            until=lambda: watched in failed or watched in ready)

    threads = [threading.Thread(target=post, args=(n,)) for n in names] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    t0, wall0 = time.monotonic(), time.time()
    go.set()
    try:
        deadline = t0 + timeout
        while len(ready) + len(failed) < users and time.monotonic() < deadline:
            time.sleep(poll)
            try:
                active = _active_servers(hub)
            except Exception:  # the hub is busy; ask again
                continue
            now = time.monotonic()
            for name in names:
                if name in ready or name in failed:
                    continue
                model = active.get(name)
                if model and model["ready"]:
                    ready[name] = now
                elif model is None and name in posted:
                    failed[name] = "server stopped while starting (see the hub log)"
        for name in names:
            if name not in ready and name not in failed:
                failed[name] = f"not ready after {timeout} s"
    finally:
        for t in threads:
            t.join(timeout)
        _stop_all(hub, names)

    if failed:
        failed.update(_timeouts_in_log(hub, log_from, set(failed)))
    events = progress.get("events", [])
    before_ready = [(t, e) for t, e in events if not e.get("ready") and not e.get("failed")]
    stamps = [wall0] + [t for t, _ in events]
    return {
        "users": users,
        "started": len(ready),
        "failed": len(failed),
        "failures": [f"{n} x {why}" for why, n in Counter(failed.values()).most_common(5)],
        "all_ready_s": max(ready.values()) - t0 if ready and not failed else None,
        "last_settled_s": max([*ready.values(), *posted.values()], default=t0) - t0,
        "median_ready_s": statistics.median(v - t0 for v in ready.values()) if ready else None,
        "watched": watched,
        "progress_events_before_ready": len(before_ready),
        "progress_messages": [e.get("message", "") for _, e in events],
        "longest_silence_s": max((b - a for a, b in zip(stamps, stamps[1:])), default=None),
        "watched_ready": watched in ready,
    }


def _timeouts_in_log(hub, since, names):
    """Which of ``names`` the hub gave up on, and which timeout it hit, from its log."""
    with open(hub.log_path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    found = {}
    for name in names:
        if f"{name}'s server never showed up" in text:
            found[name] = "the hub gave up waiting for the server to answer (Spawner.http_timeout)"
        elif f"{name}'s server failed to start" in text:
            found[name] = "the hub gave up waiting for the spawner (Spawner.start_timeout)"
    return found


def _stop_all(hub, names, timeout=120):
    for name in names:
        try:
            hub.api("DELETE", f"users/{name}/server")
        except Exception:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not set(_active_servers(hub)) & set(names):
                return
        except Exception:
            pass
        time.sleep(0.5)
    for name in names:  # one more, slower pass; raises BenchError if a server refuses to stop
        stop_server(hub, name)
