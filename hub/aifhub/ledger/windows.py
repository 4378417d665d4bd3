"""Quota windows: a day, an ISO week (Monday to Sunday) or the whole course, in the course's time zone."""

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo


def window_bounds(window, now, tz="UTC", course_start=None, course_end=None):
    """``(start, reset)`` of the window holding ``now``, both aware UTC datetimes.

    ``reset`` is when the quota is whole again (``None`` for a whole-course window).
    """
    zone = ZoneInfo(tz or "UTC")
    local = now.astimezone(zone)
    if window == "day":
        start = datetime.combine(local.date(), time(), zone)
        reset = datetime.combine(local.date() + timedelta(days=1), time(), zone)
    elif window == "week":
        monday = local.date() - timedelta(days=local.weekday())
        start = datetime.combine(monday, time(), zone)
        reset = datetime.combine(monday + timedelta(days=7), time(), zone)
    elif window == "course":
        start = (
            datetime.combine(course_start, time(), zone) if course_start else datetime(2000, 1, 1, tzinfo=timezone.utc)
        )
        reset = None
    else:
        raise ValueError(f"unknown quota window {window!r} (expected day, week or course)")
    return start.astimezone(timezone.utc), None if reset is None else reset.astimezone(timezone.utc)
