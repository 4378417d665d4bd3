"""Spawning: one learner at a time (overhead against plain JupyterHub) and 20 at once (the storm)."""

import os
import re
import statistics
from collections import Counter
import threading
import time

from .hubs import log_size, log_text, request_spawn, stop_server, timed_spawn, user_token, watch_progress
from .stall import StallProbe


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
    return {
        "aifhub_s": a,
        "plain_s": p,
        "ratio": a / p,
        "runs": runs,
        "aifhub_all": times["aifhub"],
        "plain_all": times["plain"],
    }


BROWSER_NICE = 19


def as_browser():
    """Run the calling thread at the lowest CPU priority: it stands for a learner's browser, which in a
    workshop runs on the learner's own machine, not on the hub's cores (the probe keeps its priority)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BROWSER_NICE)
    except OSError:
        pass


def _active_servers(hub, page=25):
    """``{name: server model}`` of every user with a server, a page at a time: JupyterHub builds a whole
    page in one go on its loop (about 2 ms a user), so one page of 100 would stall it for 0.2 s."""
    found, offset = {}, 0
    while True:
        r = hub.api("GET", f"users?state=active&offset={offset}&limit={page}")
        r.raise_for_status()
        users = r.json()
        users = users["items"] if isinstance(users, dict) else users
        found.update({u["name"]: u["servers"].get("") for u in users if u["servers"].get("")})
        if len(users) < page:
            return found
        offset += page


HUB_STALL = re.compile(r"The hub's event loop stalled (\d+) ms")


def hub_stalls(hub, since):
    """The stalls (seconds) that the hub's own loop watchdog logged from byte ``since`` of its log (aifhub
    logs each over 100 ms); None for a hub without one (plain JupyterHub)."""
    if hub.kind != "aifhub":
        return None
    return sorted(int(ms) / 1000 for ms in HUB_STALL.findall(log_text(hub, since)))


def spawn_storm(hub, users=20, prefix="storm", timeout=600, poll=5.0, course=None):
    """``users`` learners ask for a server at the same instant; who starts, who waits, who fails, how long.

    Every learner follows their progress stream while waiting, as the spawn page does; the hub's
    list of servers is checked every ``poll`` seconds for servers that vanish without a word.
    A learner is "waiting" when their last word is a place in a queue (the GPU waitlist).
    """
    names = [f"{prefix}{i:03d}" for i in range(users)]
    tokens = {n: user_token(hub, n) for n in names}
    log_from = log_size(hub)
    watched = names[-1]
    posted, ready, failed, streams = {}, {}, {}, {n: [] for n in names}
    go = threading.Event()
    finished = threading.Event()

    def word(name):
        return streams[name][-1][1].get("message", "") if streams[name] else ""

    def waiting_now():
        return {n for n in names if n not in ready and n not in failed and "waitlist" in word(n)}

    def follow(name):
        return watch_progress(
            hub,
            name,
            tokens[name],
            timeout,
            poll=0.2,
            events=streams[name],
            until=lambda: name in failed or name in ready or finished.is_set(),
        )

    def learner(name):
        as_browser()  # and so are the threads it starts
        go.wait()
        watcher = None
        if name == watched:  # from the start, as the spawn page does
            watcher = threading.Thread(target=follow, args=(name,))
            watcher.start()
        try:
            r = request_spawn(hub, name, tokens[name], course)
        except Exception as exc:  # a timeout is a failure the learner sees
            failed[name] = f"request failed: {exc}"
            return
        posted[name] = time.monotonic()
        if r.status_code == 201:
            ready.setdefault(name, time.monotonic())
        elif r.status_code != 202:
            failed[name] = f"{r.status_code}: {r.text[:200]}"
        if watcher is not None:
            watcher.join(timeout)
        elif r.status_code == 202:
            follow(name)
        events = streams[name]
        for _t, event in events[-1:]:
            if name in ready or name in failed:
                break
            if event.get("ready"):
                ready.setdefault(name, _t - time.time() + time.monotonic())
            elif event.get("failed"):
                failed.setdefault(name, event.get("message", "failed")[:200])

    threads = [threading.Thread(target=learner, args=(n,)) for n in names]
    for t in threads:
        t.start()
    probe = StallProbe(hub)
    probe.start()
    time.sleep(1)  # the probe's first answers: the hub at rest
    t0, wall0 = time.monotonic(), time.time()
    go.set()
    try:
        deadline, settled_since = t0 + timeout, None
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            time.sleep(poll)
            # the rest wait in a queue that moves only when someone stops: the storm is over
            rest = set(names) - set(ready) - set(failed)
            if rest and rest == waiting_now():
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= 2 * poll:
                    break
            else:
                settled_since = None
            try:
                active = _active_servers(hub)
            except Exception:  # the hub is busy; ask again
                continue
            for name in names:
                model = active.get(name)
                if name in posted and name not in ready and name not in failed and model is None:
                    failed[name] = "server stopped while starting (see the hub log)"
        waiting = waiting_now()
        for name in names:
            if name not in ready and name not in failed and name not in waiting:
                failed[name] = f"not ready after {timeout} s"
    finally:
        stall = probe.stop()
        stall["hub_stalls_s"] = hub_stalls(hub, log_from)
        finished.set()
        _stop_all(hub, names)
        for t in threads:
            t.join(30)

    if failed:
        failed.update(_timeouts_in_log(hub, log_from, set(failed)))
    events = streams.get(watched, [])
    before_ready = [(t, e) for t, e in events if not e.get("ready") and not e.get("failed")]
    stamps = [wall0] + [t for t, _ in events]
    to_ready = [v - t0 for v in ready.values()]
    return {
        "users": users,
        "started": len(ready),
        "waiting": len(waiting),
        "failed": len(failed),
        "failures": [f"{n} x {why}" for why, n in Counter(failed.values()).most_common(5)],
        "all_ready_s": max(to_ready) if ready and not failed and not waiting else None,
        "last_settled_s": max([*ready.values(), *posted.values()], default=t0) - t0,
        "median_ready_s": statistics.median(to_ready) if ready else None,
        "p95_ready_s": _percentile(to_ready, 95),
        "stall": stall,
        "watched": watched,
        "progress_events_before_ready": len(before_ready),
        "progress_messages": [e.get("message", "") for _, e in events],
        "longest_silence_s": max((b - a for a, b in zip(stamps, stamps[1:])), default=None),
        "watched_ready": watched in ready,
    }


def _percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _timeouts_in_log(hub, since, names):
    """Which of ``names`` the hub gave up on, and which timeout it hit, from its log."""
    text = log_text(hub, since)
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
