"""LTI context roles → aifhub roles (LTI 1.3 §A.2.2; NRPS accepts the short names too)."""

MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership"
INSTRUCTOR_ROLES = {
    "Instructor",
    "ContentDeveloper",
    "Administrator",
    "Instructor#TeachingAssistant",
    "TeachingAssistant",
}
LEARNER_ROLES = {"Learner", "Member"}


def _short(role):
    for prefix in (MEMBERSHIP + "#", MEMBERSHIP + "/"):
        if role.startswith(prefix):
            return role[len(prefix) :]
    return role


def aifhub_role(roles):
    """'instructor', 'learner' or None for the LTI ``roles`` of a launch or an NRPS member."""
    short = {_short(r) for r in roles or () if isinstance(r, str)}
    if short & INSTRUCTOR_ROLES or any(r.startswith("Instructor#") for r in short):
        return "instructor"
    if short & LEARNER_ROLES or any(r.startswith("Learner#") for r in short):
        return "learner"
    return None
