"""Run one notebook in a grading pod: the one step of autograding that runs a learner's code.

On Kubernetes the service's grading worker does the trusted steps of ``nbgrader autograde``
itself (with the gradebook); for the execution of each notebook it writes a job folder onto the
grading volume, and a Kubernetes Job runs, in the course's sandbox image, with that folder (and
nothing else) mounted at ``/grading``::

    python -m aifhub.grading.runners.execute /grading

The folder::

    job.json        what to run: {"cell_timeout": s, "notebook_timeout": s}
    input.ipynb     the notebook, its locked cells restored by nbgrader
    work/           the learner's other files: the kernel's working directory
    output.ipynb    written here: the executed notebook
    result.json     written here: {"ok": true} or {"ok": false, "reason": ..., "error": ...}

nbgrader's own Execute step runs the notebook, so per-cell timeouts, interrupts and errors read as
they do everywhere else. Past the whole-notebook timeout the kernel is killed. Before the answers
are written, every process the learner's code started is killed (this process is their subreaper,
so a double fork does not escape), so nothing of theirs can change the answers; they are written
under new names and renamed into place.
"""

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULT = "result.json"
OUTPUT = "output.ipynb"


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Orphans of the kernel (a double fork, a daemon) become our children instead of PID 1's, so
    :func:`kill_descendants` finds every process the learner's code started."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def kill_descendants(rounds=20):
    """SIGKILL every process below this one until none is left (a fork bomb takes a few rounds)."""
    me = os.getpid()
    for _ in range(rounds):
        pids = descendants(me)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap them, or they stay listed as zombies
                pass
        except ChildProcessError:
            pass
        time.sleep(0.05)


def write_new(folder, name, data):
    """``folder/name`` from bytes, through a fresh temporary file renamed over it (never through a link)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o640)  # the service's worker reads it (same uid, or the volume's group)
    os.replace(tmp, Path(folder) / name)


def classify(exc):
    """nbgrader's failures, in the words the service's worker recognises."""
    text = f"{type(exc).__name__}: {exc}"
    if "DeadKernel" in text or "Kernel died" in text:
        return "kernel-died", text
    if "Timeout" in text or "timed out" in text:
        return "timeout", text
    return "error", text


class Run:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.spec = json.loads((self.folder / "job.json").read_text())
        self.lock = threading.Lock()
        self.done = False

    def finish(self, result, notebook=None):
        """Kill everything else, then write the answers; the first caller wins."""
        with self.lock:
            if self.done:
                return
            self.done = True
            kill_descendants()
            if notebook is not None:
                import nbformat

                write_new(self.folder, OUTPUT, nbformat.writes(notebook).encode())
            write_new(self.folder, RESULT, json.dumps(result).encode())

    def on_deadline(self):
        limit = self.spec.get("notebook_timeout")
        self.finish(
            {
                "ok": False,
                "reason": "timeout",
                "error": f"Timeout waiting for the notebook: it ran past the {limit} s limit and was stopped",
            }
        )
        os._exit(0)

    def run(self):
        import nbformat
        from nbgrader.preprocessors import Execute

        become_subreaper()
        nb = nbformat.read(str(self.folder / "input.ipynb"), as_version=4)
        timer = threading.Timer(float(self.spec["notebook_timeout"]), self.on_deadline)
        timer.daemon = True
        timer.start()
        execute = Execute(timeout=int(self.spec["cell_timeout"]))
        try:
            nb, _ = execute.preprocess(nb, {"metadata": {"path": str(self.folder / "work")}})
        except Exception as exc:  # nbgrader's own failures: the kernel died or would not stop
            reason, text = classify(exc)
            timer.cancel()
            self.finish({"ok": False, "reason": reason, "error": text})
            return 0
        timer.cancel()
        self.finish({"ok": True}, nb)
        return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m aifhub.grading.runners.execute JOB_FOLDER", file=sys.stderr)
        return 2
    for var in ("HOME", "IPYTHONDIR", "JUPYTER_RUNTIME_DIR"):  # under /tmp (an emptyDir): made on each run
        if os.environ.get(var):
            os.makedirs(os.environ[var], mode=0o700, exist_ok=True)
    return Run(argv[0]).run()


if __name__ == "__main__":
    sys.exit(main())
