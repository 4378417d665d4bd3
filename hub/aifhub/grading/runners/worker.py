"""A grading worker process: runs nbgrader steps for the service, one request at a time.

The service starts ``python -m aifhub.grading.runners.worker RUNTIME_DIR`` and writes one JSON request
per line on its stdin; the worker answers with one line ``AIFHUB-RESULT {json}`` on stdout
(anything else there is log). It imports nbgrader once, so a job costs the kernel's start and
the notebook's run, not a Python start-up. nbgrader changes the working directory while it
converts, so each worker runs one request at a time; parallelism comes from several workers.

The worker is trusted (it reads and writes the gradebook); the code it grades runs in a kernel
started through :mod:`aifhub.grading.runners.kernel`: another uid, no network, resource limits.
"""

import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import stat
import sys
import traceback
from pathlib import Path

from ... import fsafe
from ..coursedir import GradingDir, ignore_learner_files, venv_path_env
from ..store import read_text
from . import mounts

RESULT = "AIFHUB-RESULT "
KERNEL_NAME = "aifhub-grader"
LOG_TAIL = 4000

log = logging.getLogger("aifhub.grading.runners.worker")
EXCEPTION_LINE = re.compile(r"^(\[\w+\] )?[\w.]*(Error|Exception|Failed|Interrupt)\b[^:]*:")
BOILERPLATE = re.compile(r"Please see the the above traceback|Removing failed assignment|There was an error processing")


def failure_lines(text, lines=4):
    """What nbgrader's log says of a failure: its exceptions' last lines (else its last lines), without
    the tracebacks' frames and nbgrader's own boilerplate (the log indents multi-line messages)."""
    said, frame = [], False
    for raw in text.splitlines():
        line = raw.strip()
        if frame:  # the source line of a traceback frame
            frame = False
            if raw.startswith(" "):
                continue
        if line.startswith('File "'):
            frame = True
            continue
        if (
            not line
            or "Traceback (most recent call last)" in line
            or set(line) <= set("^~ ")
            or BOILERPLATE.search(line)
        ):
            continue
        said.append(line)
    exceptions = [line for line in said if EXCEPTION_LINE.match(line)]
    return list(dict.fromkeys(exceptions or said))[-lines:]


def kill_uid(uid):
    """SIGKILL every process running as ``uid`` (a grading uid: nothing else runs as it)."""
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return killed


class Worker:
    def __init__(self, runtime):
        self.runtime = Path(runtime)
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.spec_path = self.runtime / "kernel-spec.json"
        kernel_dir = self.runtime / "kernels" / KERNEL_NAME
        kernel_dir.mkdir(parents=True, exist_ok=True)
        (kernel_dir / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [
                        sys.executable,
                        "-m",
                        "aifhub.grading.runners.kernel",
                        str(self.spec_path),
                        "-f",
                        "{connection_file}",
                    ],
                    "display_name": "Python 3 (aifhub grading sandbox)",
                    "language": "python",
                    "interrupt_mode": "signal",
                }
            )
        )
        os.environ.update(venv_path_env())
        os.environ["JUPYTER_PATH"] = str(self.runtime)
        for secret in ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN", "AIFHUB_INTERNAL_TOKEN", "AIFHUB_ADMIN_TOKEN"):
            os.environ.pop(secret, None)
        from nbgrader.apps import NbGraderAPI  # noqa: F401  (import once, up front)

    # -- helpers -------------------------------------------------------------

    def api(self, req, config=None):
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        gd = GradingDir(req["grading_root"], req["course_id"], req.get("db_url"))
        gd.ensure(req.get("cell_timeout", 60))
        config = config or gd.nbgrader_config(req.get("cell_timeout", 60))
        return gd, NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)

    @staticmethod
    def _outcome(result, what):
        if result.get("success"):
            return {"ok": True, "log": (result.get("log") or "")[-LOG_TAIL:]}
        return {
            "ok": False,
            "error": f"{what} failed: " + ((result.get("error") or "") + (result.get("log") or ""))[-LOG_TAIL:],
        }

    # -- requests ------------------------------------------------------------

    def op_ping(self, req):
        return {"ok": True, "pid": os.getpid()}

    def op_release(self, req):
        """Copy the source in, generate the student version, publish it to the exchange's outbound."""
        gd, api = self.api(req)
        a = req["assignment"]
        gd.sync_source(req["course_path"], a)
        out = self._outcome(api.generate_assignment(a), "generate_assignment")
        if not out["ok"]:
            return out
        gd.outbound(a)  # checks the name
        with gd.open_below("release", a) as release, gd.open_below("exchange", "outbound") as outbound:
            outbound.replace_dir(a, lambda d: fsafe.copy_tree(release, d))
            with outbound.sub(a) as published:
                out["notebooks"] = sorted(n[:-6] for n, st in published.entries() if n.endswith(".ipynb"))
        return out

    def op_add_students(self, req):
        from nbgrader.api import Gradebook

        gd = GradingDir(req["grading_root"], req["course_id"], req.get("db_url"))
        with Gradebook(gd.db_url, gd.course_id) as gb:
            for student in req["students"]:
                gb.update_or_create_student(student)
        return {"ok": True}

    def op_copy_gradebook(self, req):
        """A course's SQLite gradebook into its new PostgreSQL one (once, when PostgreSQL is chosen)."""
        from ..gradebooks import copy_gradebook

        copied = copy_gradebook(req["from"], req["to"])
        return {"ok": True, "rows": copied}

    def op_autograde(self, req):
        """Autograde one collected submission: its kernel sandboxed here, or its notebooks run as Kubernetes Jobs."""
        a, student = req["assignment"], req["student"]
        scratch = Path(req["scratch"])
        gd = GradingDir(req["grading_root"], req["course_id"], req.get("db_url"))
        submitted = gd.step("submitted", student, a)
        if not submitted.is_dir():
            return {"ok": False, "reason": "error", "error": f"no collected submission of {student} for {a}"}
        shutil.rmtree(scratch, ignore_errors=True)  # descriptor-based: follows no link
        scratch.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        with fsafe.opened(scratch.parent) as top:  # root's, traversable by the kernel's uid (whatever the umask)
            top.mkdir(scratch.name, 0o711 if req.get("uid") is not None else 0o700).close()
        isolate = self._mount_scratch(req, scratch)
        group = self._job_group(req, scratch)
        config = gd.nbgrader_config(req.get("cell_timeout", 60))
        try:
            if req.get("kubernetes"):
                self._kubernetes_config(req, config)
            else:
                self._sandbox_config(req, config, submitted, isolate, group)
            out = self._autograde(req, config)
            if out.get("reason") == "kernel-died" and group is not None and group.oom_kills():
                out["reason"] = "out-of-memory"  # the job as a whole went over its memory limit
            return out
        finally:
            os.environ.pop("JUPYTER_RUNTIME_DIR", None)
            if req.get("uid") is not None:
                kill_uid(req["uid"])
            elif not req.get("kubernetes"):
                self.kill_pidfile(scratch / "kernel.pid")
            if group is not None:
                group.remove()
            if isolate:
                mounts.release_scratch(scratch)
            shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _mount_scratch(req, scratch):
        """As root, for a local kernel: the job's scratch folder on a tmpfs of ``scratch_bytes`` (see
        :mod:`.mounts`); True when it is, so that the kernel gets its own mount namespace too."""
        if req.get("uid") is None or req.get("kubernetes") or not req.get("scratch_bytes"):
            return False
        try:
            mounts.mount_scratch(scratch, req["scratch_bytes"])
        except OSError as exc:
            log.warning(
                "Graded code's files are not confined (no tmpfs for %s: %s); it may write to the disk and /tmp",
                scratch,
                exc,
            )
            return False
        return True

    @staticmethod
    def _job_group(req, scratch):
        """As root, for a local kernel: the job's control group (:mod:`.jobgroup`), or None."""
        if req.get("uid") is None or req.get("kubernetes"):
            return None
        from . import jobgroup

        limits = req.get("limits") or {}
        return jobgroup.create(scratch, limits.get("memory_bytes"), limits.get("processes"))

    def _sandbox_config(self, req, config, submitted, isolate=False, group=None):
        """Kernels started here through :mod:`.kernel`: own uid, no network, limits, a scratch copy of the files.

        The scratch folder stays root's (the kernel's uid cannot rename or replace what is in it); the
        kernel gets ``work`` (a copy of the learner's files, made through descriptors), ``home``, ``tmp``
        and ``ipc`` (its ZeroMQ sockets); ``conn`` (the connection file) and ``kernel.pid`` are root's."""
        uid, scratch = req.get("uid"), Path(req["scratch"])
        work, home, conn, tmp, ipc = (scratch / name for name in ("work", "home", "conn", "tmp", "ipc"))
        a, student = req["assignment"], req["student"]
        gd = GradingDir(req["grading_root"], req["course_id"])
        with fsafe.opened(scratch) as sd:
            with gd.open_below("submitted", student, a) as src, sd.mkdir("work", 0o700, uid, uid) as dst:
                fsafe.copy_tree(src, dst, skip=ignore_learner_files, uid=uid, gid=uid)
            for name in ("home", "tmp", "shm", "ipc"):
                sd.mkdir(name, 0o700, uid, uid).close()
            sd.mkdir("conn", 0o711).close()
        limits = req.get("limits") or {}
        spec = {
            "uid": uid,
            "scratch": str(scratch),
            "work": str(work),
            "home": str(home),
            "tmp": str(tmp),
            "runtime": str(ipc),
            "path": os.environ["PATH"],
            "network": req.get("network", "unshare"),
            "cpu_seconds": limits.get("cpu_seconds"),
            "memory_bytes": limits.get("memory_bytes"),
            "file_bytes": limits.get("file_bytes"),
            "processes": limits.get("processes"),
            "env": req.get("env") or {},
            "isolate": isolate,
            "cgroup": group.paths if group is not None else [],
            "devices": req.get("devices") or [],
        }
        self.spec_path.write_text(json.dumps(spec))
        os.environ["JUPYTER_RUNTIME_DIR"] = str(conn)  # connection file and ipc sockets: where the kernel can reach
        config.Execute.kernel_name = KERNEL_NAME
        config.KernelManager.transport = "ipc"  # ZeroMQ over unix sockets: reachable from the kernel's netns
        config.KernelManager.connection_file = str(conn / "kernel.json")
        config.KernelManager.ip = str(ipc / "kernel-ipc")

    @staticmethod
    def _kubernetes_config(req, config):
        """nbgrader's Execute step replaced by one Kubernetes Job per notebook (:mod:`.kubejobs`)."""
        from nbgrader.converters import Autograde
        from nbgrader.preprocessors import Execute

        from .kubejobs import KubernetesExecute

        kube = req["kubernetes"]
        default = Autograde.class_traits()["autograde_preprocessors"].default()
        config.Autograde.autograde_preprocessors = [KubernetesExecute if p is Execute else p for p in default]
        config.KubernetesExecute.job_template = kube["job"]
        config.KubernetesExecute.job_name = kube["job"]["metadata"]["name"]
        config.KubernetesExecute.namespace = kube["namespace"]
        config.KubernetesExecute.kube_config = kube.get("kube_config") or ""
        config.KubernetesExecute.scratch = req["scratch"]
        config.KubernetesExecute.volume_root = kube["volume_root"]
        config.KubernetesExecute.notebook_timeout = float(kube["notebook_timeout"])
        config.KubernetesExecute.start_timeout = int(kube["start_timeout"])
        Path(req["scratch"]).chmod(0o777)  # grading pods run as the sandbox user

    def _autograde(self, req, config):
        from nbgrader.api import Gradebook, MissingEntry

        a, student = req["assignment"], req["student"]
        gd, api = self.api(req, config)
        result = api.autograde(a, student)
        text = (result.get("log") or "") + (result.get("error") or "")  # the exception last: it survives the cut
        notes = self.notes(gd.step("autograded", student, a))
        if not result.get("success"):
            reason = "error"
            if "CellTimeoutError" in text or "Timeout waiting for" in text:
                reason = "timeout"
            elif "OOMKilled" in text:
                reason = "out-of-memory"
            elif "DeadKernelError" in text or "Kernel died" in text or "kernel died" in text:
                reason = "kernel-died"
                if "out-of-memory" in notes:
                    reason = "out-of-memory"
            return {
                "ok": False,
                "reason": reason,
                "error": text[-LOG_TAIL:],
                "said": failure_lines(text),
                "notes": notes,
            }
        with Gradebook(gd.db_url, gd.course_id) as gb:
            try:
                sub = gb.find_submission(a, student)
                score, max_score = sub.score, sub.max_score
            except MissingEntry:
                score, max_score = None, None
        return {"ok": True, "score": score, "max_score": max_score, "notes": notes, "log": text[-LOG_TAIL:]}

    @staticmethod
    def kill_pidfile(path):
        try:
            os.kill(int(Path(path).read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass

    @staticmethod
    def notes(folder):
        """What went wrong inside a graded notebook that still got graded: cell timeouts, memory errors."""
        import nbformat

        notes = {}
        for path in sorted(Path(folder).glob("*.ipynb")):
            try:
                nb = nbformat.read(str(path), as_version=4)
            except Exception:
                continue
            for index, cell in enumerate(nb.cells):
                for output in cell.get("outputs", []):
                    if output.get("output_type") != "error":
                        continue
                    ename = output.get("ename", "")
                    where = f"{path.stem} cell {index}"
                    kind = None
                    if ename in ("CellTimeoutError", "KeyboardInterrupt") or "TimeoutError" in ename:
                        kind = "cell-timeout"
                    elif ename == "MemoryError":
                        kind = "out-of-memory"
                    if kind and where not in notes.get(kind, []):
                        notes.setdefault(kind, []).append(where)
        return notes

    def op_feedback(self, req):
        """Generate feedback for every graded learner and publish it to each learner's feedback folder."""
        gd, api = self.api(req)
        a = req["assignment"]
        nothing = self._nothing_graded(gd, a)
        if nothing:
            return nothing
        out = self._outcome(api.generate_feedback(a), "generate_feedback")
        if not out["ok"]:
            return out
        released = []
        with gd.open_below("feedback") as feedback, gd.open_below("exchange", "feedback") as exchange:
            for student, st in feedback.entries():
                if not stat.S_ISDIR(st.st_mode):
                    continue
                gd.released_feedback(student, a)  # checks the names
                try:
                    src = gd.open_below("feedback", student, a)
                except (FileNotFoundError, fsafe.UnsafePath):
                    continue
                stamp = read_text(gd.step("submitted", student, a, "timestamp.txt"), gd.root)

                def fill(d, src=src, stamp=stamp):
                    fsafe.copy_tree(src, d)
                    if stamp is not None:
                        d.write("timestamp.txt", stamp)

                with src, exchange.mkdir(student) as theirs:
                    theirs.replace_dir(a, fill)
                released.append(student)
        out["students"] = released
        return out

    @staticmethod
    def _nothing_graded(gd, a):
        """The answer for feedback with nothing to do (no autograded submission of ``a``), else None: a plain
        reason and message, not nbgrader's failure with its traceback."""
        graded = gd.step("autograded")
        if graded.is_dir() and any((p / a).is_dir() for p in graded.iterdir()):
            return None
        if not gd.step("release", a).is_dir():
            return {
                "ok": False,
                "reason": "not-released",
                "message": f"{a} is not released yet: release it, then collect and autograde the submissions first.",
            }
        return {
            "ok": False,
            "reason": "nothing-graded",
            "message": f"Nothing graded yet for {a}: collect and autograde first.",
        }

    def op_grades(self, req):
        from nbgrader.api import Gradebook

        gd = GradingDir(req["grading_root"], req["course_id"], req.get("db_url"))
        rows = []
        if not Path(gd.root / "gradebook.db").exists() and gd.db_url.startswith("sqlite"):
            return {"ok": True, "rows": rows}
        with Gradebook(gd.db_url, gd.course_id) as gb:
            for assignment in gb.assignments:
                for student in gb.students:
                    try:
                        sub = gb.find_submission(assignment.name, student.id)
                    except Exception:
                        rows.append(
                            {
                                "student_id": student.id,
                                "assignment_id": assignment.name,
                                "timestamp": None,
                                "score": None,
                                "max_score": assignment.max_score,
                                "submitted": False,
                            }
                        )
                        continue
                    rows.append(
                        {
                            "student_id": student.id,
                            "assignment_id": assignment.name,
                            "timestamp": sub.timestamp.isoformat() if sub.timestamp else None,
                            "score": sub.score,
                            "max_score": sub.max_score,
                            "submitted": True,
                        }
                    )
        return {"ok": True, "rows": rows}

    def handle(self, req):
        op = getattr(self, "op_" + str(req.get("op")), None)
        if op is None:
            return {"ok": False, "error": f"unknown request {req.get('op')!r}"}
        try:
            return op(req)
        except Exception as exc:
            log.exception("grading request %s failed", req.get("op"))
            return {
                "ok": False,
                "reason": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-LOG_TAIL:],
            }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="grading worker: %(levelname)s %(message)s")
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever nbgrader or a library prints goes to the log, not into the answers
    worker = Worker(argv[0] if argv else ".")
    out.write(RESULT + json.dumps({"ok": True, "ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError:
            out.write(RESULT + json.dumps({"ok": False, "error": "bad request"}) + "\n")
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            answer = worker.handle(req)
        out.write(RESULT + json.dumps(answer, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
