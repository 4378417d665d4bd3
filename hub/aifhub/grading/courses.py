"""Course set-up on the service's side: a course's grading directory, its group and gradebook, its sharing
with the course's instructors, and the learners' nbgrader ids.

:class:`CourseSetup` is handed the settings (:mod:`.settings`), the database, the service's core (the catalog
and membership; None offline) and the step worker (a SQLite gradebook's copy into PostgreSQL runs there). The
queue, the instructors' steps and the exchange's store ask it for a course's directory and what every worker
request carries (:meth:`CourseSetup.base_request`). At start, :meth:`CourseSetup.prepare_root` moves course
directories left where an older configuration kept them, and shares every course as this version does.
"""

import asyncio
import logging
import os
import stat
from datetime import datetime

from sqlalchemy import func, select

from .. import fsafe, texts
from ..errors import Refusal
from . import gradebooks
from . import students as students_db
from .coursedir import GradingDir, check_name
from .models import GradingCourse

log = logging.getLogger(__name__)

UNSHARED = ("exchange",)  # what the course's group never sees: submissions as received, the learners' side
ROOT_FILES = (
    "gradebook.db",
    "gradebook.url",
    "nbgrader_config.py",
)  # made by root, shared read-only (the gradebook rw)


class CourseSetup:
    """Courses' grading directories, groups and gradebooks, and who a course's learners are to nbgrader."""

    def __init__(self, settings, db, core=None, steps=None):
        self.settings = settings
        self.db = db
        self.core = core  # the catalog and membership (None: offline tools and tests know no course)
        self.steps = steps  # the StepWorker that copies a SQLite gradebook into PostgreSQL
        self._gradebooks = {}  # course id -> gradebook URL, set up in this run
        self._gradebook_lock = asyncio.Lock()

    # -- who may do what -----------------------------------------------------

    def course(self, course_id):
        """The catalog's course ``course_id``; Refusal ``unknown-course`` when there is none."""
        course = self.find(course_id)
        if course is None:
            raise Refusal("unknown-course", f"There is no course {texts.shown(course_id)}.")
        return course

    async def role(self, course, user, admin):
        """'instructor' (instructors and admins), 'learner' (roster or enrolled), or None: the service's
        membership answers."""
        return await self.core.membership.role(course, user, admin)

    def find(self, course_id):
        """The catalog's course ``course_id``, or None."""
        return self.core.catalog.get(course_id) if self.core else None

    @property
    def images_dir(self):
        return self.core.images_dir

    def dir(self, course_id):
        self.settings.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        return GradingDir(self.settings.root, course_id).ensure(self.settings.cell_timeout)

    # -- a course's group and gradebook ---------------------------------------

    def _record(self, s, course_id):
        """The course's row of ``grading_courses``, made (with the next free group id) on first use."""
        row = s.get(GradingCourse, course_id)
        if row is None:
            highest = s.scalar(select(func.max(GradingCourse.gid)))
            row = GradingCourse(course_id=course_id, gid=max(self.settings.first_course_gid, (highest or 0) + 1))
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

    def _setup_gradebook(self, course_id):
        """Decide and set up the course's gradebook: ``(url, sqlite file to copy in first or None)``."""
        gd = GradingDir(self.settings.root, course_id)
        known = self.db.call(lambda s: self._record(s, course_id).gradebook_url)
        sqlite_file = gd / "gradebook.db"
        kind = self.settings.gradebook_kind
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
            if not self.settings.gradebook_admin_url:
                raise gradebooks.GradebookError(
                    "GradingManager.gradebook is 'postgresql' but there is no PostgreSQL database for it: set "
                    "GradingManager.gradebook_admin_url (or run the service on PostgreSQL)."
                )
            url = gradebooks.ensure_postgres(self.settings.gradebook_admin_url, course_id, known)
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
                    answer = await self.steps.run(
                        {"op": "copy_gradebook", "from": copy_from, "to": url}, "Copying the gradebook into PostgreSQL"
                    )
                    sqlite_file = GradingDir(self.settings.root, course_id) / "gradebook.db"
                    await asyncio.to_thread(
                        sqlite_file.rename, sqlite_file.with_name("gradebook.db.copied-to-postgresql")
                    )
                    log.info(
                        "Gradebook of %s copied from SQLite into PostgreSQL (%s rows)", course_id, answer.get("rows")
                    )
                await asyncio.to_thread(self.dir, course_id)
                await asyncio.to_thread(GradingDir(self.settings.root, course_id, url).write_url)
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
        if not self.settings.isolated or os.geteuid() != 0:
            return
        gid = self.course_gid(course_id)
        gd = GradingDir(self.settings.root, course_id)
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

    async def base_request(self, course_id):
        """What every request to a worker carries: the course's directory, its gradebook, the cell timeout."""
        return {
            "grading_root": str(self.settings.root),
            "course_id": course_id,
            "cell_timeout": self.settings.cell_timeout,
            "db_url": await self.gradebook_url(course_id),
        }

    # -- at start ---------------------------------------------------------------

    def prepare_root(self):
        """At start: the grading folder traversable, old course directories moved in, every course shared."""
        self.settings.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.settings.root.chmod(0o711)  # traversable: instructors' sandboxes reach their course's directory
        self._move_old_course_dirs()
        self._share_all()

    def _share_all(self):
        """Every course directory shared as this version shares it, once at start: read-only for its group
        (an older version let instructors' sandboxes write there), links found there removed."""
        if not self.settings.isolated or os.geteuid() != 0:
            return
        with fsafe.opened(self.settings.root) as root:
            courses = [name for name, st in root.entries() if stat.S_ISDIR(st.st_mode) and not name.startswith(".")]
        for course_id in courses:
            try:
                self.share(check_name("course id", course_id))
            except Exception as exc:  # one odd folder must not keep the service from starting
                log.warning("Could not share the grading directory of %s: %s", course_id, exc)

    def _move_old_course_dirs(self):
        """Course directories left in ``<state>/grading`` when ``grading_dir`` is elsewhere: copied over once
        (those it already has are kept), then the old folder is renamed ``grading.moved``."""
        old = self.settings.state_dir / "grading"
        if old == self.settings.root or not old.is_dir():
            return
        with fsafe.opened(old) as src, fsafe.opened(self.settings.root) as dst:
            for name, st in src.entries():
                if stat.S_ISDIR(st.st_mode) and not name.startswith(".") and dst.lstat(name) is None:
                    with src.sub(name) as course_dir:  # links are not carried over (nor followed)
                        dst.replace_dir(name, lambda d, course_dir=course_dir: fsafe.copy_tree(course_dir, d))
                    log.info("Moved the grading directory of %s from %s to %s", name, old, self.settings.root)
        moved = old.with_name("grading.moved")
        old.rename(moved if not moved.exists() else old.with_name(f"grading.moved-{datetime.now():%Y%m%d%H%M%S}"))
