"""Who is in a course: access to its sandbox, enrolment, the roster, and the hub's groups that mirror them.

The one answer to "who is in this course", for sandboxes and for grading alike: instructors (from the
course file), learners on the course file's roster, and learners enrolled at run time (open or code
enrolment, or added by an instructor), and helpers (teaching assistants, from the course file: they answer
raised hands, and grade nothing). JupyterHub's groups follow it: ``nbgrader-<course>`` for learners,
``formgrade-<course>`` for instructors, ``helpers-<course>`` for helpers.
"""

import logging
import re
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ..catalog.access import decide_access
from ..errors import Refusal
from ..ledger.models import Enrollment
from .hubapi import HubAPIError

log = logging.getLogger(__name__)
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,254}$")


def learner_group(course_id):
    return f"nbgrader-{course_id}"


def instructor_group(course_id):
    return f"formgrade-{course_id}"


def helper_group(course_id):
    return f"helpers-{course_id}"


def course_today(course, now=None):
    tz = ZoneInfo(course.schedule.timezone if course.schedule else "UTC")
    return (now or datetime.now(tz)).astimezone(tz).date()


# -- units of work ------------------------------------------------------------


def is_enrolled(s, user, course_id):
    return s.scalar(select(Enrollment.id).where(Enrollment.user == user, Enrollment.course_id == course_id)) is not None


def enrolled_courses(s, user):
    return set(s.scalars(select(Enrollment.course_id).where(Enrollment.user == user)))


def enrolments(s, course_id=None):
    """``[(course_id, user, source)]`` of run-time enrolments (of one course, or all)."""
    q = select(Enrollment.course_id, Enrollment.user, Enrollment.source)
    if course_id is not None:
        q = q.where(Enrollment.course_id == course_id)
    return list(s.execute(q))


def enrol(s, user, course_id, source):
    """Record an enrolment; False when it existed already."""
    if is_enrolled(s, user, course_id):
        return False
    s.add(Enrollment(user=user, course_id=course_id, source=source))
    return True


def _roster_add(s, course, names):
    return [name for name in dict.fromkeys(names) if name not in course.roster and enrol(s, name, course.id, "roster")]


def _roster_remove(s, course, name):
    row = s.scalar(select(Enrollment).where(Enrollment.user == name, Enrollment.course_id == course.id))
    if row is None:
        raise Refusal("not-on-roster", f"{name} is not on the roster of {course.title}.")
    s.delete(row)


class Membership:
    """Access, enrolment and rosters of the catalog's courses, and the hub's groups (``hub``: its REST client)."""

    def __init__(self, db, courses, hub=None, on_change=None):
        self.db = db
        self.courses = courses
        self.hub = hub
        self.on_change = on_change  # called when enrolments change (Slurm's associations follow: slurm_accounts.py)

    def _changed(self):
        if self.on_change is not None:
            self.on_change()

    # -- who may do what -----------------------------------------------------

    async def access(self, course, user, admin):
        """May ``user`` start ``course``'s sandbox today (:class:`~aifhub.catalog.access.AccessDecision`)?"""
        enrolled = await self.db.run(is_enrolled, user, course.id)
        return decide_access(course, user, admin=admin, enrolled=enrolled, today=course_today(course))

    async def role(self, course, user, admin):
        """'instructor' (instructors and admins), 'helper' (the course file's helpers), 'learner' (roster or
        enrolled), or None."""
        if admin or course.is_instructor(user):
            return "instructor"
        if course.is_helper(user):
            return "helper"
        if course.on_roster(user):
            return "learner"
        return "learner" if await self.db.run(is_enrolled, user, course.id) else None

    # -- enrolment and rosters -----------------------------------------------

    async def enrol(self, course_id, user, code=None):
        course = self.courses.get(course_id)
        if course is None:
            raise Refusal("unknown-course", f"There is no course '{course_id}'.")
        if course.enrollment == "roster" and not course.on_roster(user):
            raise Refusal("roster", f"{course.title} enrols from its roster; ask an instructor to add you.")
        if course.enrollment == "code" and code != course.enrollment_code:
            raise Refusal("bad-code", f"That is not the enrolment code of {course.title}.")
        await self.db.run(enrol, user, course_id, course.enrollment)
        self._changed()
        await self._add_members(course_id, [user])  # the caller is logged in: the hub knows them
        return course

    async def enrolled_with_admission(self, course_id, user):
        """After an open course's admission enrolled ``user``: their group, best effort (the spawn goes on).

        The learner is spawning, so the hub knows them: one request adds them, instead of a sync of the whole
        group (in a storm of a hundred new learners, a hundred syncs of ever larger groups).
        """
        try:
            if self.hub is not None:
                await self.hub.add_to_group(learner_group(course_id), [user])
        except Exception as exc:  # the next sync catches up
            log.warning("Group sync after enrolling %s in %s failed: %s", user, course_id, exc)

    async def _add_members(self, course_id, names, create=False):
        """Add ``names`` (and only them) to the course's learner group, best effort: the enrolment is recorded
        whatever the hub answers, and the next full sync catches up. ``create``: they may be new to the hub."""
        if self.hub is None or not names:
            return
        try:
            if create:
                await self.hub.ensure_users(names)
            await self.hub.add_to_group(learner_group(course_id), names)
        except Exception as exc:
            log.warning("Adding %s to the group of %s failed: %s", ", ".join(names), course_id, exc)

    async def roster(self, course):
        """Learners of a course: from course.yaml, added by instructors, or enrolled themselves."""
        members = {name: "course.yaml" for name in course.roster}
        for _course_id, user, source in await self.db.run(enrolments, course.id):
            members.setdefault(user, {"roster": "added by an instructor"}.get(source, f"enrolled ({source})"))
        return dict(sorted(members.items()))

    async def roster_add(self, course, names):
        names = [n.strip() for n in names if n and n.strip()]
        bad = [n for n in names if not USERNAME.match(n)]
        if bad:
            raise Refusal("bad-name", f"Not valid user names: {', '.join(bad[:5])}")
        added = await self.db.run(_roster_add, course, names)
        self._changed()
        await self._add_members(course.id, added, create=True)  # names from a list: maybe unknown to the hub
        return added

    async def roster_remove(self, course, name):
        if name in course.roster:
            raise Refusal(
                "in-course-file", f"{name} is listed in the course file; remove them from course.yaml and publish it."
            )
        await self.db.run(_roster_remove, course, name)
        self._changed()
        if self.hub is not None:
            try:
                await self.hub.remove_from_group(learner_group(course.id), [name])
            except Exception as exc:
                log.warning("Taking %s out of the group of %s failed: %s", name, course.id, exc)

    # -- the hub's groups ----------------------------------------------------

    async def desired_groups(self, course_id=None):
        """``{group: members}`` that rosters, enrolments and instructor lists call for (one course's, or all)."""
        enrolled = await self.db.run(enrolments, course_id)
        groups = {}
        for course in self.courses.catalog.courses.values():
            if course_id is None or course.id == course_id:
                groups[learner_group(course.id)] = set(course.roster)
                groups[instructor_group(course.id)] = set(course.instructors) | course.staff
                groups[helper_group(course.id)] = set(course.helpers)
        for cid, user, _source in enrolled:
            if learner_group(cid) in groups:
                groups[learner_group(cid)].add(user)
        return groups

    async def sync_course_groups(self, course_id):
        """Both groups of one course (after a login changed its learners or instructors)."""
        if self.hub is None:
            return
        desired = await self.desired_groups(course_id)
        for group in (learner_group(course_id), instructor_group(course_id)):
            if group in desired:
                await self.hub.sync_group(group, desired[group])

    async def follow_member(self, course_id, user):
        """After ``user``'s own grants in a course changed (a login): add them to, or take them out of, its two
        groups, one request each (a user new to the hub is created first, as the login would)."""
        if self.hub is None:
            return
        desired = await self.desired_groups(course_id)
        for group in (learner_group(course_id), instructor_group(course_id)):
            if group not in desired:
                continue
            if user not in desired[group]:
                await self.hub.remove_from_group(group, [user])
                continue
            try:
                await self.hub.add_to_group(group, [user])
            except HubAPIError as exc:
                if " 400 " not in str(exc):  # "No such user": their first login, before the hub made them
                    raise
                await self.hub.ensure_users([user])
                await self.hub.add_to_group(group, [user])

    async def sync_groups(self):
        """Bring every course's groups up to date (at start and when course files change), from one listing."""
        if self.hub is None:
            return
        await self.hub.sync_groups(await self.desired_groups())

    async def resync_users(self, names):
        """Put users the hub has just created (again) in the groups they belong in: a user deleted and recreated
        comes back without groups. One request per group concerned; returns ``{group: [names]}`` added."""
        names = [n for n in dict.fromkeys(names) if isinstance(n, str) and USERNAME.match(n)]
        if not names:
            return {}
        desired = await self.desired_groups()
        todo = {}
        for name in names:
            wanted = {group for group, members in desired.items() if name in members}
            if wanted and self.hub is not None:
                wanted -= await self.hub.user_groups(name) or set()  # nothing to add when the sync made them
            for group in wanted:
                todo.setdefault(group, []).append(name)
        if self.hub is not None:
            for group, members in sorted(todo.items()):
                await self.hub.add_to_group(group, members)
        return todo
