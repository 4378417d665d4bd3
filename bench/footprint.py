"""The aifhub service's memory and CPU, idle and with many running sessions.

Sessions are opened the way the hub's spawner opens them, through the service's internal
admission endpoint (one learner each, on the CPU MOOC), without starting their sandboxes: what
is measured is the service holding and metering them. Since the hub runs no server for them,
the service's reconciliation would settle them after its grace period; the benchmark raises
that grace (a service option) so that each metering pass goes over all of them, as it would
with real sandboxes. They are released at the end.
"""

import time

import psutil
import requests

from .hubs import COURSE, BenchError, aifhub_hub, log_size, running

MB = 1024 * 1024


def service_process(hub):
    """The aifhub service (a child of the hub) and the port it listens on."""
    for p in psutil.Process(hub.proc.pid).children(recursive=True):
        try:
            cmdline = p.cmdline()
        except psutil.Error:
            continue
        if "aifhub.service" in cmdline and "-m" in cmdline:
            hub_process = p.parent()
            port = hub_process.environ().get("AIFHUB_SERVICE_PORT")
            if not port:
                raise BenchError("the hub's environment has no AIFHUB_SERVICE_PORT")
            return p, int(port)
    raise BenchError("no aifhub service process under the hub")


def sample(proc, seconds, every=0.25):
    """CPU (percent of one core) and resident memory (MB, mean and peak) of ``proc`` over ``seconds``."""
    cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        rss.append(proc.memory_info().rss)
        time.sleep(every)
    cpu1, t1 = sum(proc.cpu_times()[:2]), time.monotonic()
    rss.append(proc.memory_info().rss)
    return {
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "rss_mb": sum(rss) / len(rss) / MB,
        "rss_peak_mb": max(rss) / MB,
        "seconds": t1 - t0,
    }


def service_footprint(workdir, sessions=100, intervals=3, meter_interval=5.0, prefix="fp"):
    """Footprint of the service idle, then holding ``sessions`` sessions, over ``intervals`` metering passes each."""
    hub = aifhub_hub(
        workdir,
        gpus="0",
        meter_interval=meter_interval,
        service_args=["--AifhubService.reconcile_grace=86400"],
        second=True,  # the smoke tests' hub may run meanwhile
    )
    with running(hub):
        proc, port = service_process(hub)
        token = (hub.state_dir / "secrets" / "internal_token").read_text().strip()
        internal = f"http://127.0.0.1:{port}/services/aifhub/api/v1/internal"
        headers = {"Authorization": f"token {token}"}
        time.sleep(meter_interval)  # past start-up work (group sync, first passes)
        idle = sample(proc, intervals * meter_interval)

        names = [f"{prefix}{i:03d}" for i in range(sessions)]
        cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
        with requests.Session() as http:
            for name in names:
                r = http.post(
                    f"{internal}/admit",
                    headers=headers,
                    timeout=60,
                    json={"user": name, "server_name": "", "course": COURSE, "admin": False},
                )
                if r.status_code != 201:
                    raise BenchError(f"admitting {name} answered {r.status_code}: {r.text[:300]}")
            admit_s = time.monotonic() - t0
            admit_cpu = sum(proc.cpu_times()[:2]) - cpu0
            since = log_size(hub)
            loaded = sample(proc, intervals * meter_interval)
            with open(hub.log_path, "rb") as f:
                f.seek(since)
                settled = [line for line in f.read().decode(errors="replace").splitlines() if "Settled" in line]
            for name in names:
                http.post(
                    f"{internal}/release",
                    headers=headers,
                    timeout=60,
                    json={"user": name, "server_name": "", "reason": "benchmark over"},
                )
        if settled:
            raise BenchError(
                f"the service settled sessions while they were measured ({settled[0]}): "
                "did the service ignore --AifhubService.reconcile_grace?"
            )
    return {
        "sessions": sessions,
        "meter_interval": meter_interval,
        "intervals": intervals,
        "idle": idle,
        "loaded": loaded,
        "rss_ratio": loaded["rss_mb"] / idle["rss_mb"],
        "cpu_ratio": loaded["cpu_pct"] / idle["cpu_pct"] if idle["cpu_pct"] > 0 else None,
        "admit_s": admit_s,
        "admit_ms_each": 1000 * admit_s / sessions,
        "admit_cpu_pct": 100 * admit_cpu / admit_s,
    }
