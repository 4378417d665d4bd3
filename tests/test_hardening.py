"""Hardening (issue #23) through a real `aifhub up` as root, each attack as a learner would make it: a
busy background process while Jupyter sits idle is charged; a warm sandbox whose course dropped its
GPU is retired, not handed over; a warm runner holds only what it needs and the course's file size
limit; a home folder whose name is hashed is measured by the disk watch; a sandbox's output goes to
its own bounded log, never into the hub's."""

import os
import shutil
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import AS_ROOT, start_hub

from aifhub.isolation.homes import home_folder_name
from aifhub.isolation.sandbox_log import log_path

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not AS_ROOT, reason="cgroups, namespaces and warm sandboxes need the hub to run as root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is needed"),
]

IDLE_COURSE = """\
id: idle-lab
title: Idle Lab
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {image: cpu-base, cpu: 1, memory: 2G, max_session: 1h, disk: 50M}
allocation: EHPC-AIF-2026-PG01
idle: {after: 8s, grace: 6s}
"""
WARM_GPU_COURSE = """\
id: warm-gpu
title: Warm GPU
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {{image: pytorch-cuda, {gpu}memory: 2G, max_session: 1h, disk: 40M}}
allocation: EHPC-AIF-2026-PG01
sessions:
  - {{start: "{start}", end: "{end}", expected: 2}}
"""
GPU = "gpu: {kind: gpu, count: 1}, "
CONFIG = """\
from aifhub.hubside.embedded import configure
configure(c)  # noqa: F821
c.LocalSandboxSpawner.device_dir = {devices!r}
c.Spawner.environment["JUPYTERHUB_ACTIVITY_INTERVAL"] = "2"  # sandboxes report their activity every 2 s
"""
BUSY_S = 14  # how long the learner's detached process works while Jupyter sits idle


def fake_devices(folder):
    """nvidia0, nvidia1 and nvidiactl as world-writable character devices, as the real ones are."""
    folder.mkdir()
    null = os.stat("/dev/null")
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        os.mknod(folder / name, 0o666 | 0o020000, null.st_rdev)
        os.chmod(folder / name, 0o666)
    return folder


def warm_course(start, gpu=True):
    return WARM_GPU_COURSE.format(
        gpu=GPU if gpu else "", start=start.isoformat(), end=(start + timedelta(hours=2)).isoformat()
    )


@pytest.fixture(scope="module")
def hub(hub_dir):
    devices = fake_devices(hub_dir / "fakedev")
    config = hub_dir / "jupyterhub_config.py"
    config.write_text(CONFIG.format(devices=str(devices)))
    start = datetime.now(timezone.utc) + timedelta(minutes=5)  # warm sandboxes start 10 min before: now

    def courses(folder):
        (folder / "idle-lab").mkdir()
        (folder / "idle-lab" / "course.yaml").write_text(IDLE_COURSE)
        (folder / "warm-gpu").mkdir()
        (folder / "warm-gpu" / "course.yaml").write_text(warm_course(start))

    hub = start_hub(
        hub_dir,
        gpus="0,1",
        prepare_courses=courses,
        extra_args=("--config", str(config)),
        env={
            "AIFHUB_SERVICE_ARGS": f"--WarmPool.interval=1 --WarmPool.device_dir={devices} "
            "--DiskWatch.interval=1 --DiskWatch.grace=3 --AifhubService.catalog_poll_interval=1"
        },
    )
    hub.session_start = start
    yield hub
    hub.stop()


def iso(text):
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def wait_for(what, check, timeout=90, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def busy_devices(hub):
    return {d["id"] for d in hub.service("GET", "pool").json()["devices"] if d["busy"]}


def warm(hub, state=None):
    return [w for w in hub.service("GET", "pool").json()["warm"] if state is None or w["state"] == state]


# -- 5: the idle rule never refunds time in which the sandbox's processes ran ------------------------------


def test_a_busy_background_process_is_charged_although_jupyter_sits_idle(hub):
    r = hub.spawn("setsider", "idle-lab")
    assert r.status_code in (201, 202), r.text
    started = time.monotonic()
    # the attack: work in a process of its own session, which the hub never sees, and leave Jupyter idle
    hub.run_in_kernel(
        "setsider",
        "import subprocess, sys\n"
        f"code = 'import time\\nt = time.time()\\nwhile time.time() - t < {BUSY_S}: pass'\n"
        "subprocess.Popen(['setsid', sys.executable, '-c', code], start_new_session=True)",
    )
    wait_for("the idle stop", lambda: hub.server_model("setsider") is None, timeout=120, interval=1)
    lived_s = time.monotonic() - started
    assert lived_s >= BUSY_S + 8, f"stopped after {lived_s:.0f} s: before the busy process was even idle for 8 s"
    me = hub.service("GET", "me", token=hub.token_for("setsider")).json()
    assert me["stopped"] and "idle" in me["stopped"][0]["reason"], me["stopped"]
    session = hub.service("GET", "usage?user=setsider&format=json").json()["sessions"][-1]
    charged_s = session["cpu_ms"] / 1000  # one CPU: CPU-seconds are seconds
    # charged for the time the process worked (the old rule credited back all but the first seconds)
    assert charged_s >= BUSY_S, session


# -- 7: a learner's output goes to the sandbox's own bounded log, never into the hub's ----------------------


def test_a_sandbox_writes_to_its_own_bounded_log_not_the_hubs(hub):
    r = hub.spawn("forger", "idle-lab")
    assert r.status_code in (201, 202), r.text
    forged = "[E 2026-12-08 00:00:00.000 JupyterHub app:1] FORGED-BY-A-LEARNER"
    # as a detached process of hers would: straight to the stderr the sandbox was started with, 5 MiB of it
    writer = f"import os\nos.write(2, b'\\n{forged}\\n')\nfor _ in range(80):\n    os.write(2, b'x' * 65536)"
    out = hub.run_in_kernel(
        "forger",
        f"import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', {writer!r}], stderr=sys.stderr.fileno())"
        ".returncode)",
    )
    assert out.strip() == "0", out  # every write succeeded: past the limit they are dropped, not refused
    log = log_path(hub.state_dir, "forger")
    wait_for("the sandbox's log", lambda: log.exists() and "FORGED-BY-A-LEARNER" in log.read_text(errors="replace"))
    assert "FORGED-BY-A-LEARNER" not in hub.logs()  # nothing a learner writes reaches the hub's log
    assert 3_900_000 <= log.stat().st_size <= 4 * 1024 * 1024  # 5 MiB written, 4 MB kept
    assert oct(log.stat().st_mode & 0o777) == "0o600" and log.stat().st_uid == 0
    assert hub.server_model("forger")["ready"], "the sandbox died of its full log"
    hub.stop_server("forger")


# -- 7: the disk watch measures the home folder the spawner made, hashed names included ---------------------


def test_a_user_name_that_looks_hashed_cannot_escape_the_disk_watch(hub):
    name = "hog-0123456789abcdef"  # its home folder is hashed: work/<name> does not exist
    assert home_folder_name(name) != name
    r = hub.spawn(name, "idle-lab")
    assert r.status_code in (201, 202), r.text
    writer = "import os\nfor i in range(3):\n    open(f'big{i}', 'wb').write(os.urandom(30 * 1024 * 1024))"
    hub.run_in_kernel(
        name, f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {writer!r}], start_new_session=True)"
    )
    token = hub.token_for(name)
    notice = lambda: hub.service("GET", "me", token=token).json()["notice"] or ""  # noqa: E731
    wait_for("the disk watch's stop", lambda: "was stopped: your work folder held" in notice(), timeout=60)
    wait_for("the sandbox to go", lambda: hub.server_model(name) is None, timeout=30)


# -- 6 and 7: warm sandboxes: what the runner may do; a course that drops its GPU retires them -------------


def test_a_warm_runner_keeps_only_setuid_and_setgid_and_the_file_size_limit(hub):
    wait_for("two warm GPU sandboxes", lambda: len(warm(hub, "ready")) == 2, timeout=120)
    response, events = hub.progress_events("early", "warm-gpu")
    assert response.status_code in (201, 202), response.text
    assert any("started ahead of this session" in e.get("message", "") for e in events)
    out = hub.run_in_kernel(
        "early",
        "import resource\n"
        "print(sorted(l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapBnd:', 'CapEff:'))))\n"
        "print(resource.getrlimit(resource.RLIMIT_FSIZE)[0])",
    )
    caps, fsize = out.strip().splitlines()
    # the bounding set the runner had before hand-over: setgid (6) and setuid (7), nothing else; none effective
    assert caps == "['0000000000000000', '00000000000000c0']", caps  # (sorted: CapEff, CapBnd)
    assert int(fsize) == 40_000_000, fsize  # the course's disk: 40M
    assert log_path(hub.state_dir, "early").exists()  # its log followed it to the learner
    hub.stop_server("early")


def test_a_warm_sandbox_whose_course_dropped_its_gpu_is_retired_not_handed_over(hub):
    gpu_warm = wait_for("a warm GPU sandbox", lambda: [w for w in warm(hub, "ready") if w["devices"]], timeout=120)
    assert busy_devices(hub) >= set(gpu_warm[0]["devices"])
    (hub.courses_dir / "warm-gpu" / "course.yaml").write_text(warm_course(hub.session_start, gpu=False))
    # the warm sandboxes made for the GPU course are stopped and their devices go back to the pool
    wait_for("the GPU warm sandboxes to go", lambda: not [w for w in warm(hub) if w["devices"]], timeout=60)
    wait_for("the devices back in the pool", lambda: busy_devices(hub) == set(), timeout=30)
    assert "its course changed" in hub.logs()
    r = hub.spawn("late", "warm-gpu")
    assert r.status_code in (201, 202), r.text
    out = hub.run_in_kernel("late", "import os; print(sorted(n for n in os.listdir('/dev') if 'nvidia' in n))")
    assert out.strip() == "[]", out
    assert busy_devices(hub) == set()
    usage = hub.service("GET", "usage?user=late&format=json").json()["sessions"]
    assert usage and usage[-1]["gpus"] == 0, usage
    hub.stop_server("late")
