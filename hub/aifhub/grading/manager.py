"""The service's grading: its configuration, releases, the exchange's storage, collection, courses'
groups and gradebooks.

Handlers (:mod:`aifhub.service.grading_api`) check who may do what; this module does it. nbgrader
itself runs in worker processes (:mod:`.worker`): one for instructors' steps here, and the queue's
pool (:mod:`.queue`) that autogrades in parallel, each graded kernel sandboxed (:mod:`.kernel`) or
run as Kubernetes Jobs (:mod:`.kubejobs`).
"""

import asyncio
import csv
import io
import logging
import os
import shutil
import stat
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select
from traitlets import Dict, Enum, Integer, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .. import fsafe, idranges, texts
from ..auth.people import with_names
from ..catalog.model import parse_memory
from ..kube.settings import KubeSettings
from . import gradebooks
from .coursedir import GradingDir, check_name
from .failures import step_refusal
from ..errors import Refusal
from . import students as students_db
from .models import GradingCourse, GradingJob, Submission
from .queue import GradingQueue
from .store import TooLarge, TooMany, human_size, md5, pack, read_folder, read_text, unpack
from .workers import WorkerDied, WorkerProcess

log = logging.getLogger(__name__)

UNSHARED = ("exchange",)  # what the course's group never sees: submissions as received, the learners' side
ROOT_FILES = (
    "gradebook.db",
    "gradebook.url",
    "nbgrader_config.py",
)  # made by root, shared read-only (the gradebook rw)

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"


def network_mode_default():
    """'unshare' when a graded kernel can get a network namespace of its own here, else 'none'.

    As root that takes util-linux's unshare; otherwise also user namespaces, which some kernels forbid.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return "none"
    if os.geteuid() == 0:
        return "unshare"
    try:
        probe = subprocess.run([unshare, "--map-current-user", "--net", "--", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "none"
    return "unshare" if probe.returncode == 0 else "none"


class GradingManager(LoggingConfigurable):
    """Per-course nbgrader directories, the trusted exchange's storage, and the autograding queue."""

    workers = Integer(0, help="Parallel autograding workers. 0: one per CPU core.").tag(config=True)
    cell_timeout = Integer(60, help="Seconds one cell may run while autograding before it is interrupted.").tag(
        config=True
    )
    notebook_timeout = Integer(
        600,
        help="Seconds grading one submission may take in all (every notebook and kernel start); "
        "past it the job is stopped and fails with reason 'timeout'.",
    ).tag(config=True)
    cpu_seconds = Integer(0, help="CPU seconds a graded kernel may use (RLIMIT_CPU). 0: the notebook timeout.").tag(
        config=True
    )
    memory_limit = Unicode(
        "2G",
        help="Memory one grading job may use, e.g. 2G or 512Mi: as root, all its processes together (a memory "
        "cgroup without swap, what they write in the scratch tmpfs included); each process also gets it as "
        "RLIMIT_DATA.",
    ).tag(config=True)
    processes = Integer(
        256,
        help="Processes and threads one grading job may have at once: as root, all its processes together (a "
        "pids cgroup); also the kernel's uid's RLIMIT_NPROC.",
    ).tag(config=True)
    max_submission_size = Unicode("20M", help="Largest submission a learner may hand in (uncompressed), e.g. 20M.").tag(
        config=True
    )
    scratch_size = Unicode(
        "1G",
        help="What a graded kernel may write in all (its work folder, home, /tmp, /dev/shm: one tmpfs per job), "
        "e.g. 1G or 512M. As root only; past it writes fail with 'No space left on device'.",
    ).tag(config=True)
    max_submission_files = Integer(
        1000, help="Most files one submission may hold (a tar.gz of many tiny files is refused with 413)."
    ).tag(config=True)
    max_submissions = Integer(
        100,
        help="Hand-ins of one assignment the service keeps per learner; past it a learner's submit is refused "
        "(429) until an instructor raises it.",
    ).tag(config=True)
    submissions_per_minute = Integer(
        10, help="Hand-ins of one assignment a learner may make per minute; more are refused with 429."
    ).tag(config=True)
    course_submission_sizes = Dict(
        {},
        help="Per-course submission size limits that override max_submission_size: {course id: size}.",
    ).tag(config=True)
    first_uid = Integer(
        idranges.GRADING_FIRST,
        help="First uid of the range graded kernels run under when the service runs as root "
        "(distinct from the learners' range).",
    ).tag(config=True)
    uid_count = Integer(
        idranges.GRADING_COUNT, help="How many uids the grading range holds; job n runs as first_uid + n % uid_count."
    ).tag(config=True)
    network = Enum(
        ["unshare", "none"],
        help="How graded kernels lose the network: 'unshare' (a network namespace "
        "of their own, util-linux) or 'none' (not isolated; only for machines without unshare).",
    ).tag(config=True)
    gpu_wait = Integer(5, help="Seconds a GPU course's job waits before asking again when every GPU is busy.").tag(
        config=True
    )
    max_attempts = Integer(2, help="Times a job is tried when its worker dies under it (not for timeouts).").tag(
        config=True
    )
    gradebook = Enum(
        ["auto", "sqlite", "postgresql"],
        "auto",
        help="Where courses' nbgrader gradebooks live: 'sqlite' (gradebook.db in each course directory), "
        "'postgresql' (a schema and login role per course, see gradebook_admin_url), or 'auto': PostgreSQL when "
        "the service's database is PostgreSQL, else SQLite. A course keeps the kind its gradebook was made in; "
        "a SQLite gradebook of a course is copied into PostgreSQL once, when PostgreSQL is chosen.",
    ).tag(config=True)
    gradebook_admin_url = Unicode(
        help="SQLAlchemy URL of the PostgreSQL database that holds the courses' gradebooks, with a role that may "
        "create roles and schemas (CREATEROLE). Default: the service's own database (AifhubService.db_url).",
    ).tag(config=True)
    backend = Enum(
        ["local", "kubernetes"],
        "local",
        help="Where graded code runs: 'local' (a sandboxed kernel per submission on this machine) or 'kubernetes' "
        "(each notebook in a Job of its own, in the course's sandbox image and GPU pool, with no network; the "
        "trusted steps and the gradebook stay in the service).",
    ).tag(config=True)
    grading_dir = Unicode(
        help="Folder of the courses' nbgrader directories (<grading_dir>/<course>/). Default: <state>/grading. "
        "Course directories found in <state>/grading when it is elsewhere are moved there on start.",
    ).tag(config=True)
    scratch_dir = Unicode(
        help="Folder of the grading jobs' scratch space (a folder per job). Default: <state>/grading-scratch. "
        "With the kubernetes backend it must lie on the grading volume (kube_volume_root).",
    ).tag(config=True)
    kube_volume_root = Unicode(
        help="Where the service's pod mounts the grading volume (kube_claim); grading pods mount their job's folder "
        "of it by its path below this. Default: scratch_dir.",
    ).tag(config=True)
    # the old spellings of KubeSettings.namespace, kube_config, registry and gpu_pools (read from the config by
    # KubeSettings; declared here so that a configuration that sets them still loads without a warning)
    kube_namespace = Unicode(help="Old spelling of KubeSettings.namespace (removed in aifhub 0.4.0).").tag(config=True)
    kube_config = Unicode(help="Old spelling of KubeSettings.kube_config (removed in aifhub 0.4.0).").tag(config=True)
    kube_registry = Unicode(help="Old spelling of KubeSettings.registry (removed in aifhub 0.4.0).").tag(config=True)
    kube_gpu_pools = Dict(help="Old spelling of KubeSettings.gpu_pools (removed in aifhub 0.4.0).").tag(config=True)
    kube_claim = Unicode(
        "aifhub-grading",
        help="PersistentVolumeClaim (ReadWriteMany) mounted at kube_volume_root, "
        "of which each grading pod mounts its job's folder.",
    ).tag(config=True)
    kube_cpu = Unicode("1", help="CPU limit (and request) of a grading pod, a Kubernetes quantity.").tag(config=True)
    kube_start_timeout = Integer(
        600,
        help="Seconds a grading pod may wait for a node (a free GPU) and its image before its job fails.",
    ).tag(config=True)
    first_course_gid = Integer(
        idranges.COURSE_GID_FIRST,
        help="First group id handed to courses' grading directories (instructors' sandboxes join their "
        "course's group for formgrader); each course gets the next free one, kept for good.",
    ).tag(config=True)

    @default("network")
    def _network_default(self):
        return network_mode_default()

    @validate("memory_limit", "max_submission_size", "scratch_size")
    def _validate_size(self, proposal):
        parse_memory(proposal.value)  # raises ValueError naming the expected form
        return proposal.value

    @validate("course_submission_sizes")
    def _validate_sizes(self, proposal):
        for course, size in proposal.value.items():
            try:
                parse_memory(str(size))
            except ValueError as exc:
                raise ValueError(f"course_submission_sizes[{course!r}]: {exc}")
        return proposal.value

    @default("grading_dir")
    def _grading_dir_default(self):
        return str(self.state_dir / "grading")

    @default("scratch_dir")
    def _scratch_dir_default(self):
        return str(self.state_dir / "grading-scratch")

    @default("kube_volume_root")
    def _kube_volume_root_default(self):
        return self.scratch_dir

    @default("gradebook_admin_url")
    def _gradebook_admin_url_default(self):
        return self.db.url if self.db is not None and gradebooks.is_postgres(self.db.url) else ""

    @validate("gradebook_admin_url")
    def _validate_gradebook_admin_url(self, proposal):
        if proposal.value and not gradebooks.is_postgres(proposal.value):
            raise ValueError(
                f"gradebook_admin_url must be a postgresql:// URL, got {proposal.value.split(':')[0]}://..."
            )
        return proposal.value

    @validate(
        "cell_timeout",
        "notebook_timeout",
        "processes",
        "uid_count",
        "max_submission_files",
        "max_submissions",
        "submissions_per_minute",
    )
    def _validate_positive(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"{proposal.trait.name} must be positive, got {proposal.value}")
        return proposal.value

    def __init__(self, state_dir, db, core=None, isolated=None, kube=None, **kw):
        self.state_dir = Path(state_dir).resolve()
        self.db = db
        super().__init__(**kw)
        # where grading Jobs run (shared with the placeholders: the service's wiring passes its one KubeSettings)
        self.kube = kube if kube is not None else KubeSettings(parent=self)
        self.root = Path(self.grading_dir).resolve()
        self.scratch = Path(self.scratch_dir).resolve()
        self.kube_volume = Path(self.kube_volume_root).resolve()
        if self.backend == "kubernetes" and not self.scratch.is_relative_to(self.kube_volume):
            raise ValueError(
                f"GradingManager.scratch_dir ({self.scratch}) must lie on the grading volume that grading "
                f"pods mount, kube_volume_root ({self.kube_volume})"
            )
        self.core = core
        self.isolated = (os.geteuid() == 0) if isolated is None else isolated
        self.steps = WorkerProcess("steps", self.root / ".workers" / "steps")
        self.queue = GradingQueue(self)
        self._gradebooks = {}  # course id -> gradebook URL, set up in this run
        self.after_feedback = []  # async (course_id, assignment, released_to) hooks, e.g. LMS grade passback
        self._gradebook_lock = asyncio.Lock()
        self._submit_locks = {}  # (course id, student) -> lock: one hand-in at a time per learner

    # -- who may do what -----------------------------------------------------

    def course(self, course_id):
        course = self.core.catalog.get(course_id) if self.core else None
        if course is None:
            raise Refusal("unknown-course", f"There is no course {texts.shown(course_id)}.")
        return course

    async def role(self, course, user, admin):
        """'instructor' (instructors and admins), 'learner' (roster or enrolled), or None: the service's
        membership answers."""
        return await self.core.membership.role(course, user, admin)

    def dir(self, course_id):
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        return GradingDir(self.root, course_id).ensure(self.cell_timeout)

    # -- a course's group and gradebook ---------------------------------------

    def _record(self, s, course_id):
        """The course's row of ``grading_courses``, made (with the next free group id) on first use."""
        row = s.get(GradingCourse, course_id)
        if row is None:
            highest = s.scalar(select(func.max(GradingCourse.gid)))
            row = GradingCourse(course_id=course_id, gid=max(self.first_course_gid, (highest or 0) + 1))
            s.add(row)
            s.flush()
        return row

    def course_gid(self, course_id):
        """The group of a course's grading directory; its instructors' sandboxes are members. For threads;
        coroutines use :meth:`group_id`."""
        check_name("course id", course_id)
        return self.db.call(lambda s: self._record(s, course_id).gid)

    async def group_id(self, course_id):
        """:meth:`course_gid`, on the event loop."""
        check_name("course id", course_id)
        return await self.db.run(lambda s: self._record(s, course_id).gid)

    @property
    def gradebook_kind(self):
        if self.gradebook == "auto":
            return "postgresql" if self.gradebook_admin_url else "sqlite"
        return self.gradebook

    def _setup_gradebook(self, course_id):
        """Decide and set up the course's gradebook: ``(url, sqlite file to copy in first or None)``."""
        gd = GradingDir(self.root, course_id)
        known = self.db.call(lambda s: self._record(s, course_id).gradebook_url)
        sqlite_file = gd / "gradebook.db"
        kind = self.gradebook_kind
        if known and gradebooks.is_postgres(known) and kind == "sqlite":
            log.warning(
                "The gradebook of %s stays in PostgreSQL, where its grades are (gradebook = 'sqlite' "
                "applies to new courses)",
                course_id,
            )
            kind = "postgresql"
        if kind == "sqlite":
            url, copy_from = gradebooks.sqlite_url(gd.root), None
        else:
            if not self.gradebook_admin_url:
                raise gradebooks.GradebookError(
                    "GradingManager.gradebook is 'postgresql' but there is no PostgreSQL database for it: set "
                    "GradingManager.gradebook_admin_url (or run the service on PostgreSQL)."
                )
            url = gradebooks.ensure_postgres(self.gradebook_admin_url, course_id, known)
            copy_from = gradebooks.sqlite_url(gd.root) if sqlite_file.exists() else None

        def record(s):
            self._record(s, course_id).gradebook_url = url

        self.db.call(record)
        return url, copy_from

    async def gradebook_url(self, course_id):
        """The course's gradebook URL, set up once per service run (a PostgreSQL role and schema, or SQLite)."""
        if course_id in self._gradebooks:
            return self._gradebooks[course_id]
        async with self._gradebook_lock:
            if course_id not in self._gradebooks:
                try:
                    url, copy_from = await asyncio.to_thread(self._setup_gradebook, course_id)
                except gradebooks.GradebookError as exc:
                    raise Refusal("gradebook-unavailable", str(exc))
                if copy_from:
                    answer = await self._step(
                        {"op": "copy_gradebook", "from": copy_from, "to": url}, "Copying the gradebook into PostgreSQL"
                    )
                    sqlite_file = GradingDir(self.root, course_id) / "gradebook.db"
                    await asyncio.to_thread(
                        sqlite_file.rename, sqlite_file.with_name("gradebook.db.copied-to-postgresql")
                    )
                    log.info(
                        "Gradebook of %s copied from SQLite into PostgreSQL (%s rows)", course_id, answer.get("rows")
                    )
                await asyncio.to_thread(self.dir, course_id)
                await asyncio.to_thread(GradingDir(self.root, course_id, url).write_url)
                self._gradebooks[course_id] = url
        return self._gradebooks[course_id]

    def share(self, course_id):
        """Let the course's group (its instructors' sandboxes, for formgrader) read the course directory,
        not the exchange (submissions as received, releases, feedback). Only when the service runs as root.

        The group may write only the gradebook (and, for SQLite's journal, make new files in the course
        directory, which is sticky: nobody but root renames or removes what root made). Everything
        nbgrader works in stays writable by root alone, so no link can be planted there; a link or
        special file found all the same (an older version let the group write) is removed, never
        followed, and the walk goes through descriptors (:mod:`aifhub.fsafe`)."""
        if not self.isolated or os.geteuid() != 0:
            return
        gid = self.course_gid(course_id)
        gd = GradingDir(self.root, course_id)
        with gd.open() as course:
            book = course.lstat("gradebook.db")
            sqlite_book = book is not None and stat.S_ISREG(book.st_mode) and book.st_uid == 0 and book.st_nlink == 1
            fsafe.own(course.fd, course.stat(), 0, gid, 0o3770 if sqlite_book else 0o2750)
            for name, st in course.entries():
                if name in UNSHARED or name.startswith("."):
                    continue
                if stat.S_ISDIR(st.st_mode):
                    with course.sub(name) as sub:
                        self._scrub(sub)
                        fsafe.set_tree(sub, gid=gid, dir_mode=0o2750, file_mode=lambda st: st.st_mode & 0o700 | 0o040)
                elif not stat.S_ISREG(st.st_mode):
                    self._remove(course, name, st)
                elif name in ROOT_FILES and st.st_uid == 0 and st.st_nlink == 1:
                    with os.fdopen(course.open_file(name), "rb") as f:
                        fsafe.own(f.fileno(), os.fstat(f.fileno()), 0, gid, 0o660 if name == "gradebook.db" else 0o640)

    @classmethod
    def _scrub(cls, d):
        """Remove links and special files below ``d``: nothing root writes there is one."""
        for parent, name, st, _rel in fsafe.walk(d):
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                cls._remove(parent, name, st)

    @staticmethod
    def _remove(parent, name, st):
        log.warning(
            "Removed %s: it is %s in a grading directory (never followed)", parent.join(name), fsafe.kind(st.st_mode)
        )
        try:
            parent.remove(name)
        except OSError as exc:
            log.warning("Could not remove %s: %s", parent.join(name), exc)

    async def check_submission_rate(self, course_id, assignment, student, now):
        """429 when ``student`` handed in ``assignment`` too often lately, or as often as the course keeps."""

        def counts(s):
            q = (
                select(func.count())
                .select_from(Submission)
                .where(
                    Submission.course_id == course_id,
                    Submission.assignment_id == assignment,
                    Submission.student == student,
                )
            )
            return s.scalar(q), s.scalar(q.where(Submission.received_at >= now - timedelta(minutes=1)))

        kept, recent = await self.db.run(counts)
        if kept >= self.max_submissions:
            raise Refusal(
                "too-many",
                f"Submission refused: you have handed in {assignment} {kept} times, the most this "
                f"course keeps ({self.max_submissions}). Ask an instructor if you need another.",
            )
        if recent >= self.submissions_per_minute:
            raise Refusal(
                "too-many",
                f"Submission refused: you handed in {assignment} {recent} times in the last "
                f"minute (at most {self.submissions_per_minute}); wait a minute and hand in again.",
            )

    async def student_id(self, user):
        """The hub user's nbgrader student id (:mod:`.students`)."""
        try:
            return await self.db.run(students_db.student_id, user)
        except ValueError as exc:
            raise Refusal("bad-name", f"Cannot hand in or grade for this user name: {exc}.")

    async def student_ids(self, users):
        try:
            return await self.db.run(students_db.student_ids, list(users))
        except ValueError as exc:
            raise Refusal("bad-name", f"Cannot grade for a user name: {exc}.")

    def size_limit(self, course_id):
        return parse_memory(str(self.course_submission_sizes.get(course_id, self.max_submission_size)))

    async def base_request(self, course_id):
        """What every request to a worker carries: the course's directory, its gradebook, the cell timeout."""
        return {
            "grading_root": str(self.root),
            "course_id": course_id,
            "cell_timeout": self.cell_timeout,
            "db_url": await self.gradebook_url(course_id),
        }

    async def _step(self, request, what):
        try:
            answer = await self.steps.call(request, timeout=self.notebook_timeout)
        except asyncio.TimeoutError:
            raise Refusal("step-timeout", f"{what} took longer than {self.notebook_timeout} s and was stopped.")
        except WorkerDied as exc:
            raise step_refusal(what, error=exc)
        if not answer.get("ok"):
            raise step_refusal(what, answer)  # a short sentence for people; the details in the log
        return answer

    # -- instructors' steps --------------------------------------------------

    async def release(self, course_id, assignment):
        course = self.course(course_id)
        check_name("assignment id", assignment)
        if not (Path(course.path) / "source" / assignment).is_dir():
            raise Refusal(
                "no-assignment",
                f"{course.title} has no assignment '{assignment}' (no source/{assignment}/ in the course folder).",
            )
        await asyncio.to_thread(self.dir, course_id)
        answer = await self._step(
            await self.base_request(course_id)
            | {"op": "release", "assignment": assignment, "course_path": str(course.path)},
            f"Releasing {assignment}",
        )
        await asyncio.to_thread(self.share, course_id)
        return {
            "course_id": course_id,
            "assignment_id": assignment,
            "released": True,
            "notebooks": answer.get("notebooks", []),
        }

    @staticmethod
    def _latest_submissions(s, course_id, assignment):
        rows = s.scalars(
            select(Submission)
            .where(Submission.course_id == course_id, Submission.assignment_id == assignment)
            .order_by(Submission.id)
        )
        latest = {}
        for row in rows:
            latest[row.student] = (row.folder, row.timestamp)
        return latest

    def _collect_files(self, course_id, assignment, latest):
        """``latest``: ``{student id: (folder, timestamp)}``: each learner's newest hand-in into ``submitted/``."""
        gd = self.dir(course_id)
        with gd.open() as course, course.sub("submitted") as submitted:
            for student, (folder, timestamp) in latest.items():
                gd.inbound(student, assignment)  # checks the names

                def fill(d, student=student, folder=folder, timestamp=timestamp):
                    with gd.open_below("exchange", "inbound", student, assignment, folder) as src:
                        fsafe.copy_tree(src, d)
                    d.write("timestamp.txt", timestamp)

                with submitted.mkdir(student) as theirs:
                    theirs.replace_dir(assignment, fill)

    async def collect(self, course_id, assignment):
        self.course(course_id)
        check_name("assignment id", assignment)
        latest = await self.db.run(self._latest_submissions, course_id, assignment)
        ids = await self.student_ids(latest)
        by_id = {ids[user]: hand_in for user, hand_in in latest.items()}
        await asyncio.to_thread(self._collect_files, course_id, assignment, by_id)
        if latest:
            await self._step(
                await self.base_request(course_id) | {"op": "add_students", "students": sorted(by_id)},
                f"Collecting {assignment}",
            )
        await asyncio.to_thread(self.share, course_id)
        return {"course_id": course_id, "assignment_id": assignment, "collected": sorted(latest)}

    async def autograde(self, course_id, assignment, requested_by="", students=None):
        """Queue a job for every collected submission (or those of ``students``); returns the jobs."""
        self.course(course_id)
        check_name("assignment id", assignment)
        gd = await asyncio.to_thread(self.dir, course_id)
        folder = gd.step("submitted")
        ids = await asyncio.to_thread(
            lambda: sorted(p.name for p in folder.iterdir() if (p / assignment).is_dir()) if folder.is_dir() else []
        )
        collected = sorted((await self.db.run(students_db.users_of, ids)).values())
        if students is not None:
            missing = sorted(set(students) - set(collected))
            if missing:
                named = ", ".join(texts.shown(x) for x in missing[:10]) + (
                    f" and {len(missing) - 10} more" if len(missing) > 10 else ""
                )
                raise Refusal("no-submission", f"No collected submission of {named} for {assignment}: collect first.")
            collected = sorted(students)

        def queue_jobs(s):
            jobs = []
            for student in collected:
                open_job = s.scalar(
                    select(GradingJob).where(
                        GradingJob.course_id == course_id,
                        GradingJob.assignment_id == assignment,
                        GradingJob.student == student,
                        GradingJob.state.in_(("queued", "running")),
                    )
                )
                if open_job is None:
                    open_job = GradingJob(
                        course_id=course_id,
                        assignment_id=assignment,
                        student=student,
                        state="queued",
                        requested_by=requested_by,
                    )
                    s.add(open_job)
                    s.flush()
                jobs.append(open_job.to_dict())
            return jobs

        jobs = await self.db.run(queue_jobs)
        self.queue.wake()
        return {"course_id": course_id, "assignment_id": assignment, "jobs": jobs}

    async def jobs(self, course_id, assignment=None, ids=None):
        def read(s):
            q = select(GradingJob).where(GradingJob.course_id == course_id)
            if assignment:
                q = q.where(GradingJob.assignment_id == assignment)
            if ids:
                q = q.where(GradingJob.id.in_(list(ids)))
            return [j.to_dict() for j in s.scalars(q.order_by(GradingJob.id))]

        return await self.db.run(read)

    async def release_feedback(self, course_id, assignment):
        self.course(course_id)
        check_name("assignment id", assignment)
        await asyncio.to_thread(self.dir, course_id)
        answer = await self._step(
            await self.base_request(course_id) | {"op": "feedback", "assignment": assignment},
            f"Releasing the feedback on {assignment}",
        )
        await asyncio.to_thread(self.share, course_id)
        users = sorted((await self.db.run(students_db.users_of, answer.get("students", []))).values())  # hub names
        for hook in self.after_feedback:
            try:
                await hook(course_id, assignment, users)
            except Exception:  # the feedback is out; a hook's failure is its own to report
                log.exception("After releasing the feedback of %s/%s", course_id, assignment)
        return {"course_id": course_id, "assignment_id": assignment, "released_to": users}

    async def grades(self, course_id):
        self.course(course_id)
        await asyncio.to_thread(self.dir, course_id)
        rows = (await self._step(await self.base_request(course_id) | {"op": "grades"}, "Exporting the grades"))["rows"]
        users = await self.db.run(students_db.users_of, {row["student_id"] for row in rows})
        rows = [row | {"student_id": users[row["student_id"]]} for row in rows]  # the hub's names
        return await self.db.run(with_names, rows, "student_id")  # and who they are, as their login said

    @staticmethod
    def grades_csv(rows):
        """The grades as CSV; a cell that would start a spreadsheet formula is quoted (:mod:`aifhub.texts`)."""
        out = io.StringIO()
        writer = csv.DictWriter(
            out,
            # name, email last: who the student is, where a login said (the columns before keep their places)
            ["student_id", "assignment_id", "timestamp", "score", "max_score", "submitted", "name", "email"],
            lineterminator="\n",
            restval="",
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(texts.csv_row(row))
        return out.getvalue()

    # -- the exchange, learners' side ----------------------------------------

    def released(self, course_id):
        try:
            outbound = GradingDir(self.root, course_id).open_below("exchange", "outbound")
        except (FileNotFoundError, fsafe.UnsafePath):
            return []
        out = []
        with outbound:
            for name, st in outbound.entries():
                if not stat.S_ISDIR(st.st_mode) or name.startswith("."):
                    continue
                with outbound.sub(name) as a:
                    notebooks = sorted(
                        n[:-6] for n, nst in a.entries() if n.endswith(".ipynb") and stat.S_ISREG(nst.st_mode)
                    )
                out.append({"assignment_id": name, "notebooks": notebooks})
        return out

    async def listing(self, course_id, student):
        """Released assignments, with ``student``'s submissions and released feedback."""
        subs = await self.db.run(
            lambda s: list(
                s.scalars(
                    select(Submission)
                    .where(Submission.course_id == course_id, Submission.student == student)
                    .order_by(Submission.id)
                )
            )
        )
        try:
            sid = await self.student_id(student)
        except Refusal:  # a name nbgrader cannot know (over the hub's length): nothing of theirs to show
            sid = None
        return await asyncio.to_thread(self._listing, course_id, sid, subs)

    def _listing(self, course_id, student, subs):
        """``student``: the learner's student id (their feedback's folder)."""
        gd = GradingDir(self.root, course_id)
        out = []
        for entry in self.released(course_id):
            a = entry["assignment_id"]
            entry["submissions"] = [{"timestamp": x.timestamp} for x in subs if x.assignment_id == a]
            entry["feedback"] = self._feedback_index(gd, student, a) if student else None
            out.append(entry)
        return out

    @staticmethod
    def _feedback_index(gd, student, assignment):
        folder = gd.released_feedback(student, assignment)
        stamp = read_text(folder / "timestamp.txt", gd.root)
        if stamp is None:
            return None
        return {
            "timestamp": stamp.strip(),
            "notebooks": {name[:-5]: md5(data) for name, data in read_folder(folder, "*.html", gd.root).items()},
        }

    def assignment_archive(self, course_id, assignment):
        gd = GradingDir(self.root, course_id)
        try:
            return pack(gd.outbound(assignment), gd.root)
        except (FileNotFoundError, fsafe.UnsafePath):
            raise Refusal("not-released", f"The assignment '{assignment}' of {course_id} has not been released.")

    def _store_submission(self, course_id, assignment, student, data, stamp):
        """Unpack a hand-in into ``exchange/inbound/<student>/<assignment>/<stamp>/``: under a hidden
        temporary name first, renamed into place when complete; nothing is left of a refused one."""
        gd = self.dir(course_id)
        gd.inbound(student, assignment)  # checks the names
        folder = stamp.strftime("%Y%m%dT%H%M%S%f")
        limit = self.size_limit(course_id)
        with gd.open_below("exchange", "inbound") as inbound, inbound.makedirs((student, assignment)) as base:
            if base.lstat(folder) is not None:
                raise Refusal("same-timestamp", "A submission with the same timestamp exists; hand in again.")
            tmp = f".{folder}.new"
            base.remove(tmp)
            try:
                size = unpack(data, base, tmp, limit, self.max_submission_files)
            except TooLarge as exc:
                raise Refusal("too-large", f"Submission refused: {exc}.")
            except TooMany as exc:
                raise Refusal("too-large", f"Submission refused: {exc}.")
            except ValueError as exc:
                raise Refusal("bad-submission", f"Submission refused: {exc}.")
            base.rename(tmp, folder)
        return folder, size

    async def submit(self, course_id, assignment, student, data):
        """Hand in ``data`` (tar.gz) as the hub user ``student``."""
        check_name("assignment id", assignment)
        sid = await self.student_id(student)
        if not (GradingDir(self.root, course_id).outbound(assignment)).is_dir():
            raise Refusal("not-released", f"The assignment '{assignment}' of {course_id} has not been released.")
        limit = self.size_limit(course_id)
        if len(data) > limit:
            raise Refusal(
                "too-large",
                f"Submission refused: it is {human_size(len(data))}, over this course's limit of {human_size(limit)}.",
            )
        lock = self._submit_locks.setdefault((course_id, student), asyncio.Lock())
        async with lock:  # one hand-in of a learner at a time: the counts below hold
            stamp = datetime.now(timezone.utc)
            await self.check_submission_rate(course_id, assignment, student, stamp)
            timestamp = stamp.strftime(TIMESTAMP_FORMAT)
            folder, size = await asyncio.to_thread(self._store_submission, course_id, assignment, sid, data, stamp)
            await self.db.run(
                lambda s: s.add(
                    Submission(
                        course_id=course_id,
                        assignment_id=assignment,
                        student=student,
                        timestamp=timestamp,
                        folder=folder,
                        size_bytes=size,
                        received_at=stamp,
                    )
                )
            )
        log.info("Submission of %s for %s/%s at %s (%d bytes)", student, course_id, assignment, timestamp, size)
        return {
            "course_id": course_id,
            "assignment_id": assignment,
            "student_id": student,
            "timestamp": timestamp,
            "size_bytes": size,
        }

    async def submissions(self, course_id, assignment=None, student=None):
        def read(s):
            q = select(Submission).where(Submission.course_id == course_id)
            if assignment:
                q = q.where(Submission.assignment_id == assignment)
            if student:
                q = q.where(Submission.student == student)
            return [x.to_dict() for x in s.scalars(q.order_by(Submission.id))]

        return await self.db.run(read)

    async def feedback(self, course_id, assignment, student):
        """The hub user ``student``'s released feedback for ``assignment``: timestamp and archive, or None."""
        return await asyncio.to_thread(self._feedback, course_id, assignment, await self.student_id(student))

    async def feedback_html(self, course_id, assignment, student, notebook):
        """The hub user ``student``'s released feedback for one notebook (html bytes), or None."""
        gd = GradingDir(self.root, course_id)
        folder = gd.released_feedback(await self.student_id(student), assignment)
        return (await asyncio.to_thread(read_folder, folder, "*.html", gd.root)).get(f"{notebook}.html")

    def _feedback(self, course_id, assignment, student):
        gd = GradingDir(self.root, course_id)
        folder = gd.released_feedback(student, assignment)
        stamp = read_text(folder / "timestamp.txt", gd.root)
        if stamp is None:
            return None
        return {"timestamp": stamp.strip(), "archive": pack(folder, gd.root)}

    # -- the queue (see :mod:`.queue`) ----------------------------------------

    @property
    def worker_count(self):
        return self.workers or os.cpu_count() or 1

    async def start(self):
        """Start the queue's workers on the running event loop (they start their processes on first use)."""
        await asyncio.to_thread(self._prepare_root)
        await self.queue.start()

    def _prepare_root(self):
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.root.chmod(0o711)  # traversable: instructors' sandboxes reach their course's directory
        self._move_old_course_dirs()
        self._share_all()

    def _share_all(self):
        """Every course directory shared as this version shares it, once at start: read-only for its group
        (an older version let instructors' sandboxes write there), links found there removed."""
        if not self.isolated or os.geteuid() != 0:
            return
        with fsafe.opened(self.root) as root:
            courses = [name for name, st in root.entries() if stat.S_ISDIR(st.st_mode) and not name.startswith(".")]
        for course_id in courses:
            try:
                self.share(check_name("course id", course_id))
            except Exception as exc:  # one odd folder must not keep the service from starting
                log.warning("Could not share the grading directory of %s: %s", course_id, exc)

    def _move_old_course_dirs(self):
        """Course directories left in ``<state>/grading`` when ``grading_dir`` is elsewhere: copied over once
        (those it already has are kept), then the old folder is renamed ``grading.moved``."""
        old = self.state_dir / "grading"
        if old == self.root or not old.is_dir():
            return
        with fsafe.opened(old) as src, fsafe.opened(self.root) as dst:
            for name, st in src.entries():
                if stat.S_ISDIR(st.st_mode) and not name.startswith(".") and dst.lstat(name) is None:
                    with src.sub(name) as course_dir:  # links are not carried over (nor followed)
                        dst.replace_dir(name, lambda d, course_dir=course_dir: fsafe.copy_tree(course_dir, d))
                    log.info("Moved the grading directory of %s from %s to %s", name, old, self.root)
        moved = old.with_name("grading.moved")
        old.rename(moved if not moved.exists() else old.with_name(f"grading.moved-{datetime.now():%Y%m%d%H%M%S}"))

    async def stop(self):
        await self.queue.stop()
        await self.steps.kill()
