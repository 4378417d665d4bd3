"""NRPS roster sync: the LMS course's members become the linked aifhub course's learners and
instructors (``lti`` grants), and those who left are removed."""

import logging

from sqlalchemy import select

from ..auth.grants import after_grants, apply_grants
from ..auth.lti13 import lti_username
from ..auth.models import CourseStaff
from ..auth.names import UnusableName
from ..ledger.models import Enrollment, utcnow
from .client import PlatformError
from .links import remember_user
from .models import LtiLink
from .roles import aifhub_role

log = logging.getLogger(__name__)


def members_to_grants(tool, issuer, members):
    """``({user: role}, {user: lti_user_id}, skipped)`` of the active members with an aifhub role."""
    grants, ids, skipped = {}, {}, 0
    for member in members:
        if (member.get("status") or "Active") != "Active":
            continue
        role = aifhub_role(member.get("roles"))
        try:
            name = lti_username(member, tool.username_key, tool.username_style, issuer, tool.username_casefold)
        except UnusableName:
            skipped += 1
            continue
        if role and member.get("user_id"):
            grants[name], ids[name] = role, str(member["user_id"])
    return grants, ids, skipped


def apply_roster(s, course_id, grants):
    """Give ``grants`` their roles in ``course_id`` and revoke the ``lti`` grants of everyone else there."""
    current = set(
        s.scalars(select(Enrollment.user).where(Enrollment.course_id == course_id, Enrollment.source == "lti"))
    )
    current |= set(
        s.scalars(select(CourseStaff.user).where(CourseStaff.course_id == course_id, CourseStaff.source == "lti"))
    )
    changed = False
    for user, role in grants.items():
        changed |= bool(apply_grants(s, user, "lti", {course_id: role}, scope={course_id}))
    for user in current - set(grants):
        changed |= bool(apply_grants(s, user, "lti", {}, scope={course_id}))
    return changed


def _link_target(s, link_id):
    link = s.get(LtiLink, link_id)
    if link is None or not link.memberships_url:
        return None
    return link.memberships_url, link.issuer, link.course_id


def _sync_failed(s, link_id, message):
    s.get(LtiLink, link_id).roster_error = message


def _apply_members(s, link_id, issuer, course_id, grants, ids):
    for user, lti_user_id in ids.items():
        remember_user(s, issuer, lti_user_id, user)
    changed = apply_roster(s, course_id, grants)
    link = s.get(LtiLink, link_id)
    link.roster_synced_at, link.roster_error = utcnow(), None
    return changed


async def sync_link(tool, core, link_id):
    """Fetch one link's NRPS membership and apply it; returns a summary (errors are kept on the link)."""
    target = await core.db.run(_link_target, link_id)
    if target is None:
        return {"link": link_id, "synced": False, "why": "no NRPS endpoint"}
    url, issuer, course_id = target
    try:
        members = await tool.client.members(url)
    except PlatformError as exc:
        await core.db.run(_sync_failed, link_id, exc.message)
        log.warning("Roster sync of %s from %s failed: %s", course_id, issuer, exc.message)
        return {"link": link_id, "synced": False, "why": exc.message}
    grants, ids, skipped = members_to_grants(tool, issuer, members)
    changed = await core.db.run(_apply_members, link_id, issuer, course_id, grants, ids)
    if changed:
        await after_grants(core, {course_id}, "a roster sync")
    log.info("Roster of %s synced from the LMS: %d member(s), %d skipped", course_id, len(grants), skipped)
    return {"link": link_id, "synced": True, "members": len(grants), "skipped": skipped}
