"""Hub API throughput: ``GET /hub/api/users/NAME`` with aifhub loaded against plain JupyterHub.

Both sides use a token the user owns (made by the hub, so checked with one cheap hash), not a
token written into the config (checked with thousands of SHA-512 rounds on every request, which
would measure that hash rather than the hub).
"""

import threading
import time

import requests

from .hubs import user_token


def hammer(hub, name, token, seconds, concurrency):
    """``concurrency`` clients ask for ``name``'s model as fast as they can for ``seconds``."""
    url = f"{hub.url}/hub/api/users/{name}"
    counts = [[0, 0] for _ in range(concurrency)]  # [ok, errors] per client
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client(slot):
        with requests.Session() as s:
            s.headers["Authorization"] = f"token {token}"
            start.wait()
            while time.monotonic() < stop_at[0]:
                try:
                    ok = s.get(url, timeout=10).status_code == 200
                except requests.RequestException:
                    ok = False
                counts[slot][0 if ok else 1] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.monotonic() - t0
    return sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed


def api_throughput(aifhub, plain, seconds=5.0, rounds=2, concurrency=4, name="apiuser"):
    """Requests per second on each hub, ``rounds`` alternating bursts of ``seconds`` each."""
    totals = {}
    tokens = {}
    for hub in (aifhub, plain):
        tokens[hub.kind] = user_token(hub, name)
        hammer(hub, name, tokens[hub.kind], min(1.0, seconds), concurrency)  # warm up connections and caches
        totals[hub.kind] = [0, 0, 0.0]
    for i in range(rounds):
        for hub in (aifhub, plain) if i % 2 == 0 else (plain, aifhub):
            ok, errors, elapsed = hammer(hub, name, tokens[hub.kind], seconds, concurrency)
            t = totals[hub.kind]
            t[0] += ok
            t[1] += errors
            t[2] += elapsed
    rps = {kind: ok / elapsed for kind, (ok, _e, elapsed) in totals.items()}
    return {
        "aifhub_rps": rps["aifhub"],
        "plain_rps": rps["plain"],
        "ratio": rps["aifhub"] / rps["plain"],
        "errors": {kind: t[1] for kind, t in totals.items()},
        "seconds": seconds,
        "rounds": rounds,
        "concurrency": concurrency,
    }
