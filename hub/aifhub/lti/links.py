"""A launch, as the service records it: which aifhub course the LMS course is linked to, who the
user is in the LMS, their role there, and the AGS and NRPS endpoints the launch announced."""

from sqlalchemy import select

from ..grading.coursedir import check_name
from ..ledger.models import utcnow
from .models import LtiLink, LtiUser
from .roles import aifhub_role

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
AGS = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
NRPS = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"


class LaunchRefused(Exception):
    """The launch cannot open anything here; the message is for the person who launched."""


def launch_fields(launch):
    context = launch.get(CLAIM + "context") or {}
    custom = launch.get(CLAIM + "custom") or {}
    return {
        "issuer": launch.get("iss", ""),
        "deployment_id": str(launch.get(CLAIM + "deployment_id", "")),
        "context_id": str(context.get("id") or ""),
        "context_title": context.get("title") or context.get("label") or "",
        "lti_user_id": str(launch.get("sub") or ""),
        "role": aifhub_role(launch.get(CLAIM + "roles")),
        "custom": custom if isinstance(custom, dict) else {},
        "lineitems_url": (launch.get(AGS) or {}).get("lineitems"),
        "memberships_url": (launch.get(NRPS) or {}).get("context_memberships_url"),
    }


def decide_course(tool, catalog, f):
    """The aifhub course an LMS course opens: an admin's mapping (``course_map``) of its context id.

    A link's own custom parameter ``course`` may only repeat that mapping (it cannot open another course:
    LMS course authors must not grant themselves rights in aifhub courses they do not teach).
    """
    what = f"the LMS course {f['context_title'] or f['context_id']!r} (context id {f['context_id']!r})"
    if not f["context_id"]:
        raise LaunchRefused("This launch comes from no LMS course (no context claim), so it opens no aifhub course.")
    course_id = tool.course_map.get(f["context_id"])
    if course_id is None:
        raise LaunchRefused(
            f"{what} is not linked to an aifhub course. Ask the aifhub administrator to add "
            f"{f['context_id']}: <course id> to course_map in the LTI settings."
        )
    asked = f["custom"].get("course")
    if asked and asked != course_id:
        raise LaunchRefused(f"This link asks for the aifhub course {asked!r}, but {what} is linked to {course_id!r}.")
    if catalog.get(course_id) is None:
        raise LaunchRefused(
            f"{what} is linked to the aifhub course {course_id!r}, which does not exist (or has errors)."
        )
    return course_id


def record(s, tool, f, course_id, user):
    """Upsert the link and the user's LMS identity (a unit of work); returns the link's id."""
    link = s.scalar(
        select(LtiLink).where(
            LtiLink.issuer == f["issuer"],
            LtiLink.deployment_id == f["deployment_id"],
            LtiLink.context_id == f["context_id"],
        )
    )
    if link is None:
        link = LtiLink(
            issuer=f["issuer"],
            deployment_id=f["deployment_id"],
            context_id=f["context_id"],
            client_id=tool.primary_client_id,
            course_id=course_id,
        )
        s.add(link)
    link.course_id, link.context_title, link.updated_at = course_id, f["context_title"], utcnow()
    if f["lineitems_url"]:
        link.lineitems_url = f["lineitems_url"]
    if f["memberships_url"]:
        link.memberships_url = f["memberships_url"]
    remember_user(s, f["issuer"], f["lti_user_id"], user)
    s.flush()
    return link.id


def remember_user(s, issuer, lti_user_id, user):
    row = s.scalar(select(LtiUser).where(LtiUser.issuer == issuer, LtiUser.lti_user_id == lti_user_id))
    if row is None:
        s.add(LtiUser(issuer=issuer, lti_user_id=lti_user_id, user=user))
    elif row.user != user:
        row.user, row.updated_at = user, utcnow()


def assignment_of(course, custom):
    """The assignment a link deep-links to (custom parameter ``assignment``), if the course has it."""
    name = custom.get("assignment")
    if not name:
        return None
    try:
        check_name("assignment id", name)
    except ValueError:
        return None
    return name if name in course.assignments else None
