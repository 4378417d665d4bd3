"""How long a hub's event loop stalls: a probe asks its own port for ``/hub/health`` every few tens of
milliseconds (the hub answers it without a database query or a token check) and keeps the slowest
answer. The same probe runs against either hub, so the figure compares like with like; on a shared
machine it also includes the probe's own waits for a core."""

import json
import threading
import time

import requests


def hub_port(hub):
    """The hub's own port (not the proxy's): the plain hub's from its config, aifhub's from its state."""
    if getattr(hub, "hub_port", None):
        return hub.hub_port
    return json.loads((hub.state_dir / "ports.json").read_text())["hub"]


class StallProbe(threading.Thread):
    """Asks ``/hub/health`` every ``every`` seconds until stopped; ``longest_s`` is the slowest answer."""

    def __init__(self, hub, every=0.05, timeout=30):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{hub_port(hub)}/hub/health"
        self.every, self.timeout = every, timeout
        self.samples = []
        self.errors = 0
        self.done = threading.Event()

    def run(self):
        with requests.Session() as s:
            while not self.done.is_set():
                t0 = time.monotonic()
                try:
                    s.get(self.url, timeout=self.timeout)
                except requests.RequestException:
                    self.errors += 1
                self.samples.append(time.monotonic() - t0)
                self.done.wait(max(0.0, self.every - (time.monotonic() - t0)))

    def stop(self):
        self.done.set()
        self.join(self.timeout + 5)
        return self.summary()

    def summary(self):
        ordered = sorted(self.samples) or [0.0]
        return {
            "longest_s": ordered[-1],
            "p99_s": ordered[int(0.99 * (len(ordered) - 1))],
            "median_s": ordered[len(ordered) // 2],
            "samples": len(self.samples),
            "errors": self.errors,
        }
