"""Where a sandbox's start-up seconds go, and what the single-user server loads that it need not.

:func:`sandbox_breakdown` times one learner's start on aifhub, phase by phase, from the progress
events the learner's client sees and the time stamps of the hub's log (the hub, the service and
the sandboxes all log there). :func:`server_start_probe` starts the single-user server's
Jupyter Server directly, as shipped and with what a learner does not use left out, alternating.
"""

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from .hubs import (
    AS_ROOT,
    BenchError,
    free_port,
    log_lines,
    log_size,
    sandbox_log_lines,
    spawn_with_progress,
    stop_server,
)

PHASES = [
    ("hub: request to spawner start", "request", "admission"),
    ("admission (service: catalog, access, GPU pool, enrolment)", "admission", "admitted"),
    ("work folder and environment", "admitted", "process"),
    ("process start (fork, uid switch, exec)", "process", "started"),
    ("single-user server: Python imports", "started", "first_log"),
    ("single-user server: extensions, listening", "first_log", "listening"),
    ("hub notices it answers, adds the route", "listening", "ready"),
]


def _timeline(hub, name, t_request, events, since):
    """Wall times of each milestone of ``name``'s start."""
    marks = {"request": t_request}
    spawn = f"Spawn {name}: "
    lines = log_lines(hub, since) + sandbox_log_lines(hub, name)  # the sandbox writes to a log of its own
    for stamp, source, message in sorted(lines, key=lambda line: line[0]):
        if source == "JupyterHub" and message.startswith(spawn):
            what = message[len(spawn) :]
            if what.startswith("Checking course"):
                marks.setdefault("admission", stamp)
            elif what.startswith("Course checked"):
                marks.setdefault("admitted", stamp)
            elif what.startswith("Sandbox starting"):
                marks.setdefault("process", stamp)
            elif what.startswith("Sandbox process started"):
                marks.setdefault("started", stamp)
        elif source != "JupyterHub" and "started" in marks:  # the sandbox's own log (one start at a time)
            marks.setdefault("first_log", stamp)
            if f"/user/{name}/" in message and "listening" not in marks:
                marks["listening"] = stamp
        elif source == "JupyterHub" and message.startswith(f"User {name} took"):
            marks.setdefault("hub_ready", stamp)
    for stamp, event in events:
        if event.get("ready"):
            marks["ready"] = stamp
        elif "first_event" not in marks:
            marks["first_event"] = stamp
    marks.setdefault("ready", marks.get("hub_ready"))
    return marks


def sandbox_breakdown(hub, runs=3, prefix="brk"):
    """Median seconds of each phase of a learner's sandbox start on aifhub (``runs`` new learners)."""
    per_phase = {label: [] for label, _a, _b in PHASES}
    totals, first_events = [], []
    for i in range(runs):
        name = f"{prefix}{i}"
        since = log_size(hub)
        t0, status, events = spawn_with_progress(hub, name)
        if status not in (201, 202) or not any(e.get("ready") for _t, e in events):
            raise BenchError(f"aifhub: {name}'s start did not become ready (status {status}); see {hub.log_path}")
        time.sleep(0.3)  # the log is written by another process
        marks = _timeline(hub, name, t0, events, since)
        stop_server(hub, name)
        missing = [m for _l, a, b in PHASES for m in (a, b) if marks.get(m) is None]
        if missing:
            raise BenchError(f"aifhub: no time stamp for {sorted(set(missing))} in {hub.log_path}")
        for label, a, b in PHASES:
            per_phase[label].append(max(0.0, marks[b] - marks[a]))
        totals.append(marks["ready"] - t0)
        if "first_event" in marks:
            first_events.append(marks["first_event"] - t0)
    return {
        "runs": runs,
        "phases": {label: statistics.median(v) for label, v in per_phase.items()},
        "total_s": statistics.median(totals),
        "first_event_s": statistics.median(first_events) if first_events else None,
    }


# -- what the single-user server loads ------------------------------------------------

# Server extensions a learner's sandbox loads and does not use: nbgrader's instructor tools
# (formgrader, the course list; learners use the assignment list and validation), and the
# language-server bridge, which finds no language server installed in the sandbox.
LEARNER_SKIPS = ["jupyter_lsp", "nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.course_list"]


def _variants(workdir):
    shipped = workdir / "config-shipped"
    learner = workdir / "config-learner"
    shim = workdir / "without-rfc3987-syntax" / "rfc3987_syntax"
    for d in (shipped, learner, shim):
        d.mkdir(parents=True, exist_ok=True)
    skips = ", ".join(f'"{e}": false' for e in LEARNER_SKIPS)
    (learner / "jupyter_server_config.json").write_text(f'{{"ServerApp": {{"jpserver_extensions": {{{skips}}}}}}}\n')
    # jsonschema imports rfc3987-syntax when it is installed, which compiles ~35 Earley grammars at import;
    # without it jsonschema simply skips the "iri" formats, which no Jupyter schema uses.
    (shim / "__init__.py").write_text('raise ImportError("left out by the benchmark")\n')
    return {
        "shipped": (shipped, None),
        "learner extensions": (learner, None),
        "learner extensions, no rfc3987-syntax": (learner, shim.parent),
    }


def _time_server_start(workdir, config_dir, pythonpath, timeout=60):
    """Seconds from exec to the first answer of ``/api/status`` of a Jupyter Server with ``config_dir``."""
    port, token = free_port(), uuid.uuid4().hex
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(config_dir),
        HOME=str(home),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_DATA_DIR=str(home / "data"),
    )
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [
        str(Path(sys.executable).parent / "jupyter-server"),
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={home}",
        "--ServerApp.default_url=/lab",
    ] + (["--allow-root"] if AS_ROOT else [])
    url = f"http://127.0.0.1:{port}/api/status"
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                raise BenchError(f"jupyter-server exited with {proc.returncode} (config {config_dir})")
            try:
                if requests.get(url, headers={"Authorization": f"token {token}"}, timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise BenchError(f"jupyter-server did not answer in {timeout}s")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def server_start_probe(workdir, runs=3):
    """Median seconds to a Jupyter Server that answers, for each variant of what it loads, interleaved."""
    workdir = Path(workdir)
    variants = _variants(workdir)
    times = {v: [] for v in variants}
    for i in range(runs):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for v in order:
            times[v].append(_time_server_start(workdir, *variants[v]))
    medians = {v: statistics.median(t) for v, t in times.items()}
    return {"runs": runs, "median_s": medians, "all": times, "skipped_extensions": LEARNER_SKIPS}
