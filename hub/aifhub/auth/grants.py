"""The service's side of a login: record what the claims grant, revoke what they no longer do.

Each login source (``oidc``, ``lti``) owns its own rows: a learner enrolled from the course's roster
or by an enrolment code keeps that enrolment whatever their claims say, and a grant from one source
is never revoked by another.
"""

import dataclasses
import logging

from sqlalchemy import select

from ..ledger.models import Enrollment
from .models import CourseStaff
from .people import remember

log = logging.getLogger(__name__)
SOURCES = ("oidc", "lti")


def apply_grants(s, user, source, courses, scope=None):
    """Make ``user``'s ``source`` rows say exactly ``courses`` (``{course: learner|instructor}``), for the
    courses in ``scope`` only when given (an LTI launch speaks for its own course, not for others).

    Returns the ids of the courses whose learners or instructors changed.
    """
    in_scope = (lambda c: True) if scope is None else (lambda c: c in scope)  # noqa: E731
    changed = set()
    enrolled = {row.course_id: row for row in s.scalars(select(Enrollment).where(Enrollment.user == user))}
    for course_id, row in enrolled.items():
        if row.source == source and in_scope(course_id) and courses.get(course_id) != "learner":
            s.delete(row)
            changed.add(course_id)
    for course_id, role in courses.items():
        if role == "learner" and course_id not in enrolled:
            s.add(Enrollment(user=user, course_id=course_id, source=source))
            changed.add(course_id)
    staff = {
        row.course_id: row
        for row in s.scalars(select(CourseStaff).where(CourseStaff.user == user, CourseStaff.source == source))
    }
    for course_id, row in staff.items():
        if in_scope(course_id) and courses.get(course_id) != "instructor":
            s.delete(row)
            changed.add(course_id)
    for course_id, role in courses.items():
        if role == "instructor" and course_id not in staff:
            s.add(CourseStaff(user=user, course_id=course_id, source=source))
            changed.add(course_id)
    s.flush()
    return changed


def staff_by_course(s):
    out = {}
    for user, course_id in s.execute(select(CourseStaff.user, CourseStaff.course_id)):
        out.setdefault(course_id, set()).add(user)
    return {course_id: frozenset(users) for course_id, users in out.items()}


def apply_staff(catalog, staff):
    """Give each course of ``catalog`` the instructors that logins granted (``Course.staff``), from
    ``staff`` (``{course: frozenset}``); reads no database, so the catalog's reload may call it anywhere."""
    for course_id, course in list(catalog.courses.items()):
        granted = staff.get(course_id, frozenset())
        if granted != course.staff:
            catalog.courses[course_id] = dataclasses.replace(course, staff=granted)


async def refresh_staff(core):
    """Read the granted instructors (off the event loop) into the catalog watch (``core.courses.staff``) and its catalog."""
    core.courses.staff = await core.db.run(staff_by_course)
    apply_staff(core.catalog, core.courses.staff)


async def after_grants(core, changed, why, user=None):
    """Refresh course staff and the hub's groups of the courses in ``changed`` (only ``user``'s place in them, when
    only their grants changed: one request, not a sync of the whole group)."""
    if not changed:
        return
    await refresh_staff(core)
    for course_id in sorted(changed):
        if core.catalog.get(course_id) is None:
            continue
        try:
            if user is None:
                await core.membership.sync_course_groups(course_id)
            else:
                await core.membership.follow_member(course_id, user)
        except Exception as exc:  # the login goes on; the next full sync catches up
            log.warning("Group sync of %s after %s failed: %s", course_id, why, exc)


def _login(s, user, source, courses, scope, profile):
    remember(s, user, source, profile)
    return apply_grants(s, user, source, courses, scope)


async def record_login(core, user, source, courses, scope=None, profile=None):
    """Apply a login's grants and keep who the person is (``profile``: ``{name, email}``); refresh course staff
    and the hub's groups of the courses that changed."""
    changed = await core.db.run(_login, user, source, courses, scope, profile)
    await after_grants(core, changed, f"{user}'s login", user=user)
    known = {c: r for c, r in courses.items() if core.catalog.get(c) is not None}
    return {"user": user, "courses": known, "unknown": sorted(set(courses) - set(known)), "changed": sorted(changed)}
