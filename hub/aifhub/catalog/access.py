"""Who may start a course's sandbox, and why not."""

from dataclasses import dataclass


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    role: str = "learner"  # learner | helper | instructor | admin
    reason: str = ""  # a short label: not-enrolled | not-started | ended
    message: str = ""  # what a person reads

    def to_dict(self):
        return {"allowed": self.allowed, "role": self.role, "reason": self.reason, "message": self.message}


def decide_access(course, user, *, admin=False, enrolled=False, today):
    """May ``user`` start ``course`` on ``today`` (a date in the course's time zone)?

    Instructors and admins may always start it; helpers and learners need the date
    inside the schedule, and learners need to be on the roster, enrolled at run
    time, or the course must be open.
    """
    if course.is_instructor(user):
        return AccessDecision(True, role="instructor")
    if admin:
        return AccessDecision(True, role="admin")
    helper = user in course.helpers
    if not (helper or course.enrollment == "open" or course.on_roster(user) or enrolled):
        how = {
            "roster": "Ask an instructor of the course to add you to its roster.",
            "code": "Enrol with the course's enrolment code first.",
        }.get(course.enrollment, "")
        return AccessDecision(
            False,
            reason="not-enrolled",
            message=f"You are not enrolled in {course.title} ({course.id}). {how}".strip(),
        )
    state = course.schedule_state(today)
    if state == "not-started":
        return AccessDecision(
            False,
            reason="not-started",
            message=f"{course.title} starts on {course.schedule.start.isoformat()}; its sandbox opens then.",
        )
    if state == "ended":
        return AccessDecision(
            False,
            reason="ended",
            message=f"{course.title} ended on {course.schedule.end.isoformat()}; its sandbox is closed.",
        )
    return AccessDecision(True, role="helper" if helper else "learner")
