"""Hard limits of local sandboxes, through a real `aifhub up` as root: each sandbox in its own cgroup
(memory, CPU, processes) and bubblewrap namespace (its own GPUs' device nodes only, its own processes,
private /tmp, /var/tmp and /run/lock). Two fake GPUs (`--gpus 0,1`) whose device nodes are real character devices (copies of
/dev/null) in a folder the hub is configured to take as /dev."""

import os
import shutil
import time
import uuid

import pytest
from conftest import AS_ROOT, start_hub

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not AS_ROOT, reason="hard limits need the hub to run as root"),
    pytest.mark.skipif(
        shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is needed: apt-get install bubblewrap"
    ),
]

LIMITS_COURSE = """\
id: limits-lab
title: Limits Lab
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {image: cpu-base, cpu: 0.5, memory: 700M, max_session: 1h, disk: 50M}
allocation: EHPC-AIF-2026-PG01
"""
GPU_COURSE = """\
id: gpu-lab
title: GPU Lab
kind: workshop
enrollment: open
instructors: [instructor]
sandbox: {image: pytorch-cuda, gpu: {kind: gpu, count: 1}, memory: 2G, max_session: 1h}
allocation: EHPC-AIF-2026-PG01
"""
CONFIG = """\
from aifhub.hubside.embedded import configure
configure(c)  # noqa: F821
c.LocalSandboxSpawner.device_dir = {devices!r}
c.LocalSandboxSpawner.max_processes = 64
c.Spawner.poll_interval = 1  # the hub polls sandboxes each second: memory kills are reported quickly
"""


def fake_devices(folder):
    """nvidia0, nvidia1 and nvidiactl as world-writable character devices, as the real ones are."""
    folder.mkdir()
    null = os.stat("/dev/null")
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        os.mknod(folder / name, 0o666 | 0o020000, null.st_rdev)
        os.chmod(folder / name, 0o666)
    return folder


@pytest.fixture(scope="module")
def hub(hub_dir):
    devices = fake_devices(hub_dir / "fakedev")
    config = hub_dir / "jupyterhub_config.py"
    config.write_text(CONFIG.format(devices=str(devices)))

    def courses(folder):
        for text in (LIMITS_COURSE, GPU_COURSE):
            course = folder / text.split()[1]
            course.mkdir()
            (course / "course.yaml").write_text(text)

    hub = start_hub(
        hub_dir,
        gpus="0,1",
        prepare_courses=courses,
        extra_args=("--config", str(config)),
        env={"AIFHUB_SERVICE_ARGS": "--DiskWatch.interval=1 --DiskWatch.grace=4"},
    )
    hub.devices = devices
    yield hub
    assert hub.stop() == 0


def started(hub, name, course):
    r = hub.spawn(name, course)
    assert r.status_code in (201, 202), r.text
    return name


def test_a_sandbox_over_its_memory_limit_is_killed_and_the_learner_told(hub):
    name = started(hub, "greedy", "limits-lab")
    out = hub.run_in_kernel(
        name,
        """
import subprocess, sys
hog = subprocess.run([sys.executable, '-c', 'b = bytearray(1500 * 2**20); print(len(b))'])
print('exit', hog.returncode)
""",
    )
    assert "exit -9" in out, out  # killed by the kernel's OOM killer, not a MemoryError inside
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        notice = hub.service("GET", "me", token=hub.token_for(name)).json()["notice"] or ""
        if "memory limit" in notice:
            break
        time.sleep(0.5)
    assert "went over its memory limit (700M)" in notice and "Limits Lab" in notice, notice
    assert hub.server_model(name)["ready"]  # the server itself lives on; the learner restarts the kernel
    assert hub.service("GET", "me", token=hub.token_for("bystander")).json()["notice"] is None
    hub.stop_server(name)


def test_processes_cpu_and_tmp_are_capped(hub):
    name = started(hub, "forker", "limits-lab")
    out = hub.run_in_kernel(
        name,
        """
import os, subprocess, time
procs = []
try:
    for _ in range(100):
        procs.append(subprocess.Popen(['sleep', '60']))
    print('started all')
except (BlockingIOError, OSError) as exc:
    print('refused after', len(procs), type(exc).__name__)
for p in procs:
    p.kill(); p.wait()
t0, c0 = time.monotonic(), time.process_time()
while time.monotonic() - t0 < 2:
    pass
print('cpu share', round((time.process_time() - c0) / (time.monotonic() - t0), 2))
st = os.statvfs('/tmp')
print('tmp bytes', st.f_blocks * st.f_frsize, 'mode', oct(os.stat('/tmp').st_mode & 0o7777))
""",
        timeout=90,
    )
    assert "started all" not in out, out
    refused = int(out.split("refused after ")[1].split()[0])
    assert 30 < refused < 64, out  # 64 processes and threads in all, the server's and the kernel's included
    share = float(out.split("cpu share ")[1].split()[0])
    assert share <= 0.65, out  # the course's 0.5 CPU (a busy loop gets a whole core otherwise)
    tmp = int(out.split("tmp bytes ")[1].split()[0])
    assert 0.99e9 < tmp < 1.01e9 and "mode 0o1777" in out, out  # tmp_size, 1G by default
    hub.stop_server(name)


def test_a_sandbox_cannot_open_another_gpus_device_node(hub):
    a, b = started(hub, "gpu-a", "gpu-lab"), started(hub, "gpu-b", "gpu-lab")
    mine = {}
    for name in (a, b):
        mine[name] = hub.run_in_kernel(name, "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])").strip()
    assert sorted(mine.values()) == ["0", "1"]
    probe = f"""
import os
os.environ['CUDA_VISIBLE_DEVICES'] = '0,1'  # what a curious learner tries
for node in ('/dev/nvidia0', '/dev/nvidia1', '/dev/nvidiactl', '/dev/nvidia-uvm', {str(hub.devices / "nvidia0")!r}):
    try:
        os.close(os.open(node, os.O_RDWR))
        print(node, 'opened')
    except OSError as exc:
        print(node, 'refused', type(exc).__name__)
"""
    out = hub.run_in_kernel(a, probe)
    own, other = f"/dev/nvidia{mine[a]}", f"/dev/nvidia{mine[b]}"
    assert f"{own} opened" in out and f"{other} refused FileNotFoundError" in out, out
    assert "/dev/nvidiactl opened" in out and "/dev/nvidia-uvm opened" in out, out
    assert f"{hub.devices / 'nvidia0'} refused" in out, out  # the host's nodes are out of reach too
    cpu = started(hub, "cpu-only", "limits-lab")
    assert "nvidia" not in hub.run_in_kernel(cpu, "import os; print(os.listdir('/dev'))")
    for name in (a, b, cpu):
        hub.stop_server(name)


SECRET = f"watched-secret-{uuid.uuid4().hex[:12]}"  # this run's: other hubs on the machine run this test too


def test_sandboxes_see_only_their_own_processes_and_tmp(hub):
    a, b = started(hub, "watcher", "limits-lab"), started(hub, "watched", "limits-lab")
    hub.run_in_kernel(
        b,
        "open('/tmp/watched-was-here', 'w').write('x'); import subprocess; "
        f"subprocess.Popen(['sleep', '300', '{SECRET}'], start_new_session=True)",
    )
    out = hub.run_in_kernel(
        a,
        """
import os
cmds = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        cmds.append(open(f'/proc/{pid}/cmdline').read().replace(chr(0), ' '))
    except OSError:
        pass
print(len(cmds), 'processes')
print('secret seen' if any('watched-secret' in c for c in cmds) else 'secret hidden')
print('hub seen' if any(w in c for c in cmds for w in ('-m jupyterhub', 'aifhub.service', 'http-proxy')) else 'hub hidden')
print('tmp', 'shared' if os.path.exists('/tmp/watched-was-here') else 'private')
""",
    )
    assert "secret hidden" in out and "hub hidden" in out and "tmp private" in out, out
    assert int(out.split()[0]) <= 6, out  # bwrap's reaper, the server, the kernel (and this probe's children)
    hub.stop_server(b)
    # stopping a sandbox ends every process in it, also those started in a new session
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert SECRET not in open(f"/proc/{pid}/cmdline").read(), "a learner's process outlived the stop"
        except OSError:
            pass
    hub.stop_server(a)


def test_var_tmp_and_run_lock_are_private_to_each_sandbox_and_memory_backed(hub):
    """#23 item 4, as the attacker did it: 180 MB in /var/tmp from a 50 MB course, read by another learner
    after the first one's sandbox stopped. Each sandbox's /var/tmp and /run/lock are tmpfs of its own
    (counted in its memory limit, gone when it stops); the machine's are untouched."""
    writer = started(hub, "tmpwriter", "limits-lab")
    out = hub.run_in_kernel(
        writer,
        """
import os
for folder, size in (('/var/tmp', 45 * 2**20), ('/run/lock', 1024)):
    for part in range(4 if folder == '/var/tmp' else 1):  # 180 MB in files under the course's 50M file size
        path = os.path.join(folder, f'tmpwriter-secret{part}')
        with open(path, 'wb') as f:
            f.write(b'x' * size)
        os.chmod(path, 0o644)
    fs = [line.split()[2] for line in open('/proc/self/mounts') if line.split()[1] == folder]
    st = os.statvfs(folder)
    print(folder, 'fs', fs[-1] if fs else None, 'bytes', st.f_blocks * st.f_frsize, oct(os.stat(folder).st_mode & 0o7777))
try:
    open('/run/lock/big', 'wb').write(b'x' * 8 * 2**20)
    print('lock unbounded')
except OSError as exc:
    print('lock full', exc.errno)
""",
        timeout=90,
    )
    assert "/var/tmp fs tmpfs" in out and "/run/lock fs tmpfs" in out and "lock full 28" in out, out
    assert "0o1777" in out.split("/var/tmp")[1].splitlines()[0], out
    assert 0.99e9 < int(out.split("/var/tmp fs tmpfs bytes ")[1].split()[0]) < 1.01e9, out  # tmp_size
    for folder in ("/var/tmp", "/run/lock"):
        assert not os.path.exists(f"{folder}/tmpwriter-secret0"), f"a sandbox wrote into the machine's {folder}"
    hub.stop_server(writer)
    reader = started(hub, "tmpreader", "limits-lab")
    out = hub.run_in_kernel(
        reader,
        "import os; print('found', [os.path.exists(f'{d}/tmpwriter-secret0') for d in ('/var/tmp', '/run/lock')])",
    )
    assert "found [False, False]" in out, out
    hub.stop_server(reader)


def test_a_work_folder_over_the_disk_limit_is_stopped_and_an_oversized_file_refused(hub):
    name = started(hub, "hoarder", "limits-lab")
    out = hub.run_in_kernel(
        name,
        """
import os
try:
    with open('one-big-file.bin', 'wb') as f:
        f.write(b'x' * (60 * 10**6))
    print('big file written')
except OSError as exc:
    print('big file refused', exc.errno)
for i in range(2):
    with open(f'part{i}.bin', 'wb') as f:
        f.write(b'y' * (30 * 10**6))
print('parts written')
""",
    )
    assert "big file refused 27" in out and "parts written" in out, out  # EFBIG at the course's 50M
    token = hub.token_for(name)
    deadline, warned = time.monotonic() + 30, None
    while time.monotonic() < deadline and hub.server_model(name) is not None:
        notice = hub.service("GET", "me", token=token).json()["notice"] or ""
        if "more than the 50.0 MB Limits Lab allows" in notice:
            warned = notice
        time.sleep(0.3)
    assert warned and "delete files" in warned, warned
    assert hub.server_model(name) is None, "a sandbox over its disk limit kept running"
    assert "was stopped: your work folder held" in hub.service("GET", "me", token=token).json()["notice"]
    assert (hub.state_dir / "work" / name / "limits-lab" / "part1.bin").exists()  # nothing is deleted for them
