"""The benchmarks' table, the machine they ran on, and ``docs/benchmarks.md``."""

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata

import psutil

from .hubs import AS_ROOT, REPO


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = "-"
    ratio: float | None = None
    goal: str = "-"
    met: bool | None = None  # None: no goal for this row

    def cells(self):
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        met = {True: "yes", False: "**no**", None: "n/a"}[self.met]
        return [self.figure, self.value, self.baseline, ratio, self.goal, met]


HEADER = ["figure", "aifhub", "baseline", "ratio", "goal", "met?"]


def markdown_table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * len(HEADER)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |")
    return "\n".join(lines)


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _node_version():
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _proxy_version():
    try:
        return json.loads((REPO / "node_modules" / "configurable-http-proxy" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "unknown"


def machine():
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "as root": "yes (aifhub sandboxes run as per-learner uids)"
        if AS_ROOT
        else "no (aifhub sandboxes are not isolated)",
        "aifhub": _version("aifhub"),
        "jupyterhub": _version("jupyterhub"),
        "jupyter_server": _version("jupyter_server"),
        "jupyterlab": _version("jupyterlab"),
        "notebook": _version("notebook"),
        "nbgrader": _version("nbgrader"),
        "configurable-http-proxy": f"{_proxy_version()} (node {_node_version()})",
    }


HOW = """\
## How each figure is measured

Every figure is a ratio against a baseline measured in the same run on the same machine,
alternating between the two sides, because the machines these run on are shared and noisy.
The benchmarks start and stop everything they use (hubs, proxies, sandboxes) on loopback ports.

- **Baseline hub**: plain JupyterHub (same version, same `configurable-http-proxy`) started from
  its own config file in a scratch directory: dummy authenticator, `SimpleLocalProcessSpawner`,
  the same single-user command (`jupyterhub-singleuser`, default URL `/lab`) and `PATH`, and an
  admin token given to a service. Run as root, that spawner starts every server as root, so its
  servers get `--allow-root`; aifhub starts each sandbox under the learner's own uid (and
  prepares the learner's work folder), which is part of what its figures include.
- **Spawn overhead**: seconds from `POST /hub/api/users/NAME/server` (`{"course": "dl-basics"}`,
  the CPU MOOC, by the learner's own token) to the hub reporting the server ready; a new learner
  each run, so aifhub's figure includes enrolment and the first copy of the course materials.
  aifhub runs with one (simulated) GPU, `--gpus 0`, so the GPU pool is consulted. Median of N
  runs per side, sides alternating which goes first, after one uncounted warm-up round.
- **Hub API**: requests per second of `GET /hub/api/users/NAME` through the proxy, from several
  concurrent clients, with a token the user owns on both sides (a token written into the config
  is checked with 16,384 SHA-512 rounds per request, which would dominate both sides). Alternating
  bursts of fixed length; the load generator shares the machine's cores with the hub.
- **Stops during a storm** (50 learners, `--stop-storm`): all ask for a server at the same instant; half
  stop a moment after asking (0.5 to 3 s: their JupyterLab still loads), the other half as soon as theirs
  is ready, while the rest still boot. Timed from the `DELETE .../server` until the hub no longer lists
  the server (the spawner's stop has returned: on aifhub the session is settled and its GPU free);
  p50, p95 and p99, against plain JupyterHub's local spawner (its own 30 s waits after SIGINT and SIGTERM).
- **Spawn storm** (20, 50 and 100 learners): all learners request their server at the same instant
  (each hub in its default configuration: aifhub's `aifhub up` defaults, plain JupyterHub's
  defaults) and follow their progress stream, as the spawn page does; counted: ready, waiting (the
  last word a place in the GPU waitlist), failed (an error answer or event, a server that vanished,
  or not ready within 10 minutes), p50 and p95 seconds from the request to ready. The longest loop
  stall is the slowest answer of the hub's own port (`/hub/health`, no proxy, no database) to a
  probe asking every 50 ms during the storm, from a process of its own at nice -10 so that it does
  not wait for a core behind booting sandboxes, nor for the benchmark's own threads. aifhub's hub also watches its own loop and logs each stall over
  100 ms with what was running (`aifhub_hub_loop_stall_seconds` on `/hub/metrics`): the goal holds
  when neither the probe nor the watchdog saw one. The simulated learners (their requests and
  progress streams) run at nice 19: in a workshop their browsers are on their own machines, not on
  the hub's cores. The benchmark checks for vanished servers every 5 s, 25 users a request.
- **Warm sandbox**: seconds from the spawn request to JupyterLab's page answering the learner
  (`GET /user/NAME/lab`, 200) for a course with a session on now (a warm sandbox is handed over),
  against plain JupyterHub, and aifhub's cold start of the CPU MOOC, alternating.
- **Sandbox start breakdown** (aifhub only, no baseline): phases from the progress events the
  client sees (request, ready) and the time stamps of the hub's log (spawner milestones, and the
  sandbox's own first log line and "running at" line). A Jupyter Server started directly, as
  shipped and without what a learner's sandbox does not use, measures what trimming would save.
- **Workshop on the cluster**: N learners (default 120) of the GPU workshop, opened to all, log in at
  once and spawn, as the storm does, on a local cluster of 20 simulated GPU nodes with exactly one
  GPU per learner: without placeholders, then (on a fresh cluster, so no node has the image yet)
  with a session of the course on now for N learners, once its N placeholders run. The real
  control plane and scheduler; every pod (learners' servers, placeholders) runs for real in
  bubblewrap; a node's first pull of the course's image takes the given seconds. The hub allows N
  spawns at a time. The control plane, hub, proxy and service share the machine with every pod, where
  a real cluster gives them machines of their own: they run in the CPU group `aifhub up` gives its hub. Ratio: p95 seconds to ready with placeholders over without.
- **Service footprint**: resident memory and CPU of the aifhub service process, idle and while it
  holds N running sessions (opened through its internal admission endpoint for N learners of the
  CPU MOOC, without starting sandboxes), each over a few metering intervals. Baseline: the same
  service idle.
"""


def run_label(started):
    return f"{started.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def results_path(doc_path):
    """Where the figures behind ``docs/benchmarks.md`` are kept (beside it), so a partial run can merge."""
    return doc_path.with_suffix(".json")


def merge(doc_path, fresh, order):
    """Figures ``{name: {"run", "rows", "details"}}``: ``fresh`` ones, and for the figures not run this time
    (``--only``), those of earlier runs kept beside the document; in ``order``."""
    try:
        kept = json.loads(results_path(doc_path).read_text())["figures"]
    except (OSError, ValueError, KeyError, TypeError):
        kept = {}
    figures = {}
    for name in order:
        if name in fresh:
            figures[name] = fresh[name]
        elif name in kept:
            figures[name] = {**kept[name], "rows": [Row(**r) for r in kept[name]["rows"]]}
    return figures


def write_doc(path, figures, params, started, elapsed_s, command):
    """``docs/benchmarks.md`` from ``figures`` (see :func:`merge`), and the figures beside it as JSON."""
    m = machine()
    rows = [row for f in figures.values() for row in f["rows"]]
    details = [line for f in figures.values() for line in f["details"]]
    this_run = run_label(started)
    earlier = sorted({f["run"] for f in figures.values() if f["run"] != this_run})
    runs = f"Run {this_run}, {elapsed_s / 60:.1f} minutes."
    if earlier:
        names = ", ".join(name for name, f in figures.items() if f["run"] != this_run)
        runs += f" Kept from earlier runs ({', '.join(earlier)}): {names}."
    parts = [
        "# Benchmarks",
        "",
        "aifhub measured against plain JupyterHub in the same run (`make bench`). This file is written by",
        "the benchmarks; the latest run of each figure is below.",
        "",
        runs,
        "",
        markdown_table(rows),
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in m.items()],
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench",
        f"# which runs: {command}",
        "```",
        "",
        "Parameters: " + ", ".join(f"{k} {v}" for k, v in params.items()) + ".",
        "`python -m bench --help` lists them; `--only` reruns some figures and keeps the others.",
        "",
        "## Details",
        "",
        *details,
        "",
        HOW,
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    stored = {name: {**f, "rows": [asdict(r) for r in f["rows"]]} for name, f in figures.items()}
    results_path(path).write_text(json.dumps({"figures": stored}, indent=1) + "\n")


def now():
    return datetime.now(timezone.utc)
