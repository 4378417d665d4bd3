"""Attendance: who had a sandbox of the course running during each of its scheduled sessions, and for how long.

The one home of the rule "attended a session" (a sandbox span overlapping the session's window): the course's
attendance table and CSV use it, and so does the completion rule of credentials (``sessions: N``). Pure functions
of the windows (``(start, end)``, aware datetimes) and the learners' sandbox spans (``(started_at, ended_at or
None)``: None is still running), from the ledger's sandbox sessions.
"""

import csv
import io
from datetime import UTC, datetime


def overlap_s(window, span, now):
    """Seconds of ``span`` inside ``window``."""
    (start, end), (s, e) = window, span
    return max(0.0, (min(end, e or now) - max(start, s)).total_seconds())


def attended(windows, spans, now=None):
    """How many of the ``windows`` overlap one of the learner's ``spans``."""
    now = now or datetime.now(UTC)
    return sum(1 for w in windows if any(overlap_s(w, span, now) > 0 for span in spans))


def table(windows, spans_by_user, now=None):
    """``[{session, start, end, learners: {user: seconds}}]``: per session, each learner with a sandbox running
    during it and for how long (spans of one learner that overlap are not counted twice)."""
    now = now or datetime.now(UTC)
    out = []
    for i, (start, end) in enumerate(windows):
        learners = {}
        for user, spans in sorted(spans_by_user.items()):
            seconds = _covered((start, end), spans, now)
            if seconds > 0:
                learners[user] = int(seconds)
        out.append({"session": i, "start": start.isoformat(), "end": end.isoformat(), "learners": learners})
    return out


def _covered(window, spans, now):
    """Seconds of ``window`` covered by the union of ``spans``."""
    start, end = window
    parts = sorted((max(start, s), min(end, e or now)) for s, e in spans)
    total, cur_s, cur_e = 0.0, None, None
    for s, e in parts:
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += (cur_e - cur_s).total_seconds()
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += (cur_e - cur_s).total_seconds()
    return total


def to_csv(course_id, rows):
    """The attendance table as CSV: one line per session and learner present."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["course", "session", "session_start", "session_end", "learner", "minutes"])
    for row in rows:
        for user, seconds in row["learners"].items():
            w.writerow([course_id, row["session"], row["start"], row["end"], user, round(seconds / 60, 1)])
    return buf.getvalue()
