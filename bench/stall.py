"""How long a hub's event loop stalls: a probe asks its own port for ``/hub/health`` every few tens of
milliseconds (the hub answers it without a database query or a token check) and keeps the slowest
answer. The same probe runs against either hub, so the figure compares like with like.

The probe is a process of its own at a raised CPU priority (nice -10, as root): it measures the hub,
not its own waits for a core behind booting sandboxes, nor for the interpreter lock or the garbage
collector of the benchmark's process, where a hundred simulated learners run. Without root it
waits for a core like everyone else.
"""

import json
import os
import select
import subprocess
import sys
import time

import requests

PROBE_NICE = -10


def hub_port(hub):
    """The hub's own port (not the proxy's): the plain hub's from its config, aifhub's from its state."""
    if getattr(hub, "hub_port", None):
        return hub.hub_port
    return json.loads((hub.state_dir / "ports.json").read_text())["hub"]


class StallProbe:
    """Asks ``/hub/health`` every ``every`` seconds from a child process until stopped; ``summary()``
    holds the slowest answer."""

    def __init__(self, hub, every=0.05, timeout=30):
        self.url = f"http://127.0.0.1:{hub_port(hub)}/hub/health"
        self.every, self.timeout = every, timeout
        self.samples = []
        self.errors = 0
        self._proc = None

    def start(self):
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.stall", self.url, str(self.every), str(self.timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )

    def stop(self):
        """Stop the probe (closing its stdin) and read its samples."""
        out, _ = self._proc.communicate(timeout=self.timeout + 30)
        got = json.loads(out or b"{}")
        self.samples, self.errors = got.get("samples", []), got.get("errors", 0)
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


def probe(url, every, timeout):
    """The child: ask until stdin closes, then print ``{"samples": [...], "errors": n}``."""
    try:
        os.nice(PROBE_NICE)
    except OSError:
        pass  # not root: the probe waits for a core like everyone else
    samples, errors = [], 0
    with requests.Session() as s:
        while True:
            t0 = time.monotonic()
            try:
                s.get(url, timeout=timeout)
            except requests.RequestException:
                errors += 1
            samples.append(time.monotonic() - t0)
            wait = max(0.0, every - (time.monotonic() - t0))
            if select.select([sys.stdin], [], [], wait)[0]:  # readable: closed, the storm is over
                break
    json.dump({"samples": samples, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    probe(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
