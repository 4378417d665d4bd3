"""The parts of Kubernetes grading that run on either side of the pod, run here directly: the
executor a grading pod runs (aifhub.grading.runners.execute), and how the worker reads back what it left."""

import json
import os
import subprocess
import sys
import time
import uuid

import nbformat
import pytest
from gradingkit import SOURCE, with_extra_cells

from aifhub.grading.coursedir import venv_path_env
from aifhub.kube.client import JobFailed, pod_problem
from aifhub.grading.runners.kubejobs import read_answer


def job_folder(tmp_path, nb, cell_timeout=5, notebook_timeout=60):
    folder = tmp_path / "job"
    (folder / "work").mkdir(parents=True)
    nbformat.write(nb, str(folder / "input.ipynb"))
    (folder / "job.json").write_text(json.dumps({"cell_timeout": cell_timeout, "notebook_timeout": notebook_timeout}))
    return folder


def execute(folder, timeout=120):
    env = venv_path_env(dict(os.environ, HOME=str(folder / "home")))
    return subprocess.run(
        [sys.executable, "-m", "aifhub.grading.runners.execute", str(folder)],
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def alive(marker):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    return [pid for pid in out if int(pid) != os.getpid()]


DAEMON = """import time
for _ in range(6000):  # for a minute: rewrite the executor's answers
    open("output.ipynb", "w").write("tampered")
    open("result.json", "w").write("{}")
    time.sleep(0.01)
"""
# a double fork into a session of its own: no process group or parent of the kernel's holds it
LAUNCH = (
    "import subprocess, sys\n"
    'launcher = \'import subprocess, sys; subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], '
    "start_new_session=True)'\n"
    "subprocess.run([sys.executable, '-c', launcher, {daemon!r}, {marker!r}], cwd='..')\n"
)


def test_what_the_learners_code_left_running_cannot_change_the_answers(tmp_path):
    marker = f"aifhub-tamper-{uuid.uuid4().hex[:8]}"
    nb = with_extra_cells(
        nbformat.read(str(SOURCE), as_version=4),
        [LAUNCH.format(daemon=DAEMON, marker=marker), "import time\ntime.sleep(1)"],
    )
    folder = job_folder(tmp_path, nb)
    try:
        proc = execute(folder)
        assert proc.returncode == 0, proc.stderr
        time.sleep(0.5)
        assert not alive(marker), "the learner's daemon outlived the executor"
        assert json.loads((folder / "result.json").read_text()) == {"ok": True}
        executed = nbformat.read(str(folder / "output.ipynb"), as_version=4)
        assert any(o.get("output_type") == "stream" for c in executed.cells for o in c.get("outputs", []))
    finally:
        subprocess.run(["pkill", "-f", marker])


def test_past_the_whole_notebook_limit_the_kernel_is_stopped_and_the_run_says_timeout(tmp_path):
    nb = with_extra_cells(nbformat.read(str(SOURCE), as_version=4), ["import time\ntime.sleep(2)"] * 10)
    folder = job_folder(tmp_path, nb, cell_timeout=5, notebook_timeout=6)
    started = time.monotonic()
    proc = execute(folder)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    result = json.loads((folder / "result.json").read_text())
    assert result["ok"] is False and result["reason"] == "timeout" and "6" in result["error"], result
    assert not (folder / "output.ipynb").exists()


def test_a_dead_kernel_reads_as_such(tmp_path):
    nb = with_extra_cells(nbformat.read(str(SOURCE), as_version=4), ["import os\nos.kill(os.getpid(), 9)"])
    folder = job_folder(tmp_path, nb)
    assert execute(folder).returncode == 0
    result = json.loads((folder / "result.json").read_text())
    assert (
        result == {"ok": False, "reason": "kernel-died", "error": result["error"]} and "DeadKernel" in result["error"]
    )


@pytest.mark.parametrize("make", ["symlink", "fifo", "directory", "missing", "huge"])
def test_the_worker_reads_back_only_plain_files_the_pod_wrote(tmp_path, make):
    secret = tmp_path / "secret"
    secret.write_text("the hub's secret")
    answer = tmp_path / "result.json"
    if make == "symlink":
        answer.symlink_to(secret)
    elif make == "fifo":
        os.mkfifo(answer)
    elif make == "directory":
        answer.mkdir()
    elif make == "huge":
        answer.write_bytes(b"x" * 2048)
    with pytest.raises(JobFailed, match="left no usable result.json"):
        read_answer(answer, limit=1024)


@pytest.mark.parametrize(
    "status, problem",
    [
        (
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            },
            ("unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
        ),
        (
            {
                "phase": "Pending",
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}}
                ],
            },
            ("image", "ImagePullBackOff: pull access denied"),
        ),
        (
            {
                "phase": "Failed",
                "containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}],
            },
            ("oom", "OOMKilled: the grading pod was killed at its memory limit"),
        ),
        ({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]}, None),
    ],
)
def test_pod_problems_are_named(status, problem):
    assert pod_problem({"status": status}) == problem
