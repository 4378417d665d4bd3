"""What a hand-in did to the machine through its graded kernel, done again through a real hub as root
(#23 items 1 and 3): a System V shared-memory segment left behind after the job (host memory held, a
channel to later jobs), three children of one kernel each under the per-process memory limit but
together far over it, and the machine's device nodes opened read-write (``/dev/fuse``).

Each graded kernel now has an IPC namespace of its own (the segment is gone with the job and was never
on the machine), the job a memory and pids cgroup for all its processes (the sum is bounded), and a
``/dev`` with the basic nodes only (and the job's GPUs')."""

import ast
import os

import nbformat
import pytest
from conftest import AS_ROOT, start_hub
from gradingkit import ASSIGNMENT, COURSE, solution_notebook, submit, wait_jobs, with_cell

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not AS_ROOT, reason="graded kernels get namespaces and cgroups when the service runs as root"),
]

MEMORY = 600 * 2**20
SERVICE_ARGS = (
    "--GradingManager.workers=1 --GradingManager.cell_timeout=30 --GradingManager.notebook_timeout=90 "
    "--GradingManager.memory_limit=600M"
)
KEY = 0x41F00000 + int(os.environ.get("AIFHUB_TEST_ID_SLOT", "0") or 0)  # this run's own segment key

ATTACK = f"""
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
shmid = libc.shmget({KEY}, 1 << 30, 0o1000 | 0o666)  # IPC_CREAT, mode 0666: 1 GiB, as the attacker did
print("SHM", shmid, ctypes.get_errno())
child = "import time; b = bytearray(b'x') * ({MEMORY // 2}); print('held', flush=True); time.sleep(4)"
children = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(3)]
print("CHILDREN", [c.wait() for c in children])
print("DEV", sorted(os.listdir("/dev")))
for node in ("/dev/fuse", "/dev/kmsg", "/dev/vda", "/dev/null"):
    try:
        os.close(os.open(node, os.O_RDWR))
        print("OPEN", node, "opened")
    except OSError as exc:
        print("OPEN", node, "refused", type(exc).__name__)
"""


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="none", env={"AIFHUB_SERVICE_ARGS": SERVICE_ARGS})
    yield hub
    hub.stop()


def host_segments():
    """The keys of the machine's System V shared-memory segments."""
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[0]) for line in f.readlines()[1:]}


def test_a_graded_kernel_leaves_no_segment_is_bounded_as_a_job_and_opens_no_host_device(hub):
    assert KEY not in host_segments()
    assert hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for("attacker")).status_code == 201
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release").status_code == 200
    nb = solution_notebook()
    softmax = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "softmax")
    r = submit(hub, "attacker", with_cell(nb, "softmax", ATTACK + softmax.source))
    assert r.status_code == 201, r.text
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={"students": ["attacker"]})
    assert r.status_code == 202, r.text
    job = wait_jobs(hub, [j["id"] for j in r.json()["jobs"]])["attacker"]
    assert job["state"] == "done" and job["score"] == 10, job
    graded = hub.state_dir / "grading" / COURSE / "autograded" / "attacker" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    text = "".join(
        o.get("text", "") for c in nbformat.read(str(graded), as_version=4).cells for o in c.get("outputs", [])
    )
    said = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0].isupper()}
    # item 1: the segment was made (in the kernel's own IPC namespace) and is not on the machine after the job
    assert int(said["SHM"].split()[1]) >= 0, text
    assert KEY not in host_segments(), "the graded kernel's shared-memory segment outlived its job"
    # item 1: three children of 300 MiB each, under the per-process limit, but the job holds 600 MiB in all
    codes = [int(c) for c in said["CHILDREN"].split("[")[1].rstrip("]").split(",")]
    assert -9 in codes, f"the job held more than its memory limit: {text}"
    # item 3: a /dev of the basic nodes only
    dev = set(ast.literal_eval(said["DEV"].split(" ", 1)[1]))
    assert dev <= {"null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr", "shm"}, dev
    assert "OPEN /dev/fuse refused FileNotFoundError" in text, text
    assert "OPEN /dev/kmsg refused FileNotFoundError" in text and "OPEN /dev/null opened" in text, text
