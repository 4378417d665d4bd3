"""Learners joining an open course at once: what each admission costs now that it adds one member to the course's
group, against the whole-group sync every enrolment used to make (measured in the same run, on the same hub).

- aifhub: ``learners`` new learners are admitted to the open MOOC at once through the service's internal endpoint
  (what the spawner waits for: access, the ledger's hold, the enrolment and its group request), then released;
- baseline: the same number of group updates made the old way, concurrently, through the service's own hub
  client: for each new member, make sure every member exists (``POST /users`` with all of them), read the group,
  add who is missing (:meth:`HubClient.sync_group` with the group so far). It leaves out the admission's own work,
  so it favours the baseline.
"""

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import requests

from aifhub.service.hubapi import HubClient

from .hubs import COURSE, aifhub_hub, running


def _admit_all(hub, names, internal_token, service_port):
    """Admit ``names`` at once (one thread each); ``[seconds]`` per admission."""
    url = f"http://127.0.0.1:{service_port}/services/aifhub/api/v1/internal/"
    headers = {"Authorization": f"token {internal_token}"}
    times, errors = {}, []
    start = threading.Barrier(len(names))

    def admit(name):
        start.wait()
        t0 = time.monotonic()
        r = requests.post(
            url + "admit",
            headers=headers,
            timeout=120,
            json={"user": name, "server_name": "", "course": COURSE, "admin": False},
        )
        times[name] = time.monotonic() - t0
        if r.status_code != 201:
            errors.append(f"{name}: {r.status_code} {r.text[:120]}")

    threads = [threading.Thread(target=admit, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for name in names:
        requests.post(
            url + "release", headers=headers, timeout=60, json={"user": name, "server_name": "", "reason": "bench"}
        )
    if errors:
        raise RuntimeError("admissions failed: " + "; ".join(errors[:3]))
    return [times[n] for n in names]


async def _old_syncs(api_url, token, group, names):
    """Each new member's group update the old way, all at once; ``[seconds]`` per update."""
    hub = HubClient(api_url, token)
    members, times = set(), []

    async def one(name):
        members.add(name)
        t0 = time.monotonic()
        await hub.sync_group(group, set(members))
        times.append(time.monotonic() - t0)

    await asyncio.gather(*(one(n) for n in names))
    return times


def enrolment_storm(workdir, learners=30):
    hub = aifhub_hub(Path(workdir), gpus="none")
    with running(hub):
        state = Path(hub.state_dir)
        internal_token = (state / "secrets" / "internal_token").read_text().strip()
        ports = json.loads((state / "ports.json").read_text())
        joiners = [f"joiner{i:03d}" for i in range(learners)]
        others = [f"other{i:03d}" for i in range(learners)]
        r = hub.api("POST", "users", json={"usernames": joiners + others})
        r.raise_for_status()
        time.sleep(2)  # the service's look at the new users (none is in a course yet)
        token = hub.token_for("admin")  # made by the hub: one cheap hash per request, as the service's own token
        new = _admit_all(hub, joiners, internal_token, ports["service"])
        hub.api("POST", "groups/bench-whole-group-sync", json={"users": []}).raise_for_status()  # as the course's was
        api_url = f"http://127.0.0.1:{ports['hub']}/hub/api"
        old = asyncio.run(_old_syncs(api_url, token, "bench-whole-group-sync", others))
        in_group = set(hub.api("GET", f"groups/nbgrader-{COURSE}").json()["users"])
    missing = sorted(set(joiners) - in_group)
    if missing:
        raise RuntimeError(f"admitted learners missing from nbgrader-{COURSE}: {missing[:5]}")
    return {
        "learners": learners,
        "admit_p50_s": statistics.median(new),
        "admit_max_s": max(new),
        "old_p50_s": statistics.median(old),
        "old_max_s": max(old),
        "ratio": statistics.median(new) / statistics.median(old),
    }
