"""The training report of an AI Factory: unique trainees, participations, completions, hours in sandboxes and
GPU-hours, in all and by course, kind, scheduled session, country, sector and gender.

Where the figures come from: a *participation* is a learner with at least one sandbox session in a course
(the ledger's ``sandbox_sessions``) or a credential for it; a *completion* is a credential that is not revoked;
*hours* are sandbox sessions' wall-clock hours, *GPU-hours* what the ledger charged; a sandbox session counts
toward a scheduled session (course.yaml ``sessions:``) when it ran during its window. Country, sector and
gender are what learners declared themselves (optional; ``undeclared`` otherwise).

Privacy: a row about fewer than :data:`MIN_CELL` people is suppressed in exports (its counts and hours are
``None``, "<5" in CSV), so a report never singles out a person. Suppressing a cell does not stop every
inference by subtraction from the totals; reports are for funders' aggregate figures, not for publication
cell by cell.
"""

import csv
import io
from collections import defaultdict

from sqlalchemy import select

from ..ledger.models import SandboxSession
from ..ledger.units import MS_PER_HOUR
from ..state.base import utcnow
from .models import Credential, TraineeProfile

MIN_CELL = 5
SECTORS = ("academia", "start-up", "sme", "large-industry", "public-sector", "other")
SECTOR_NAMES = {
    "academia": "Academia",
    "start-up": "Start-up",
    "sme": "SME",
    "large-industry": "Large industry",
    "public-sector": "Public sector",
    "other": "Other",
}
GENDERS = ("female", "male", "other", "prefer-not-to-say")
GENDER_NAMES = {"female": "Female", "male": "Male", "other": "Other", "prefer-not-to-say": "Prefer not to say"}
UNDECLARED = "undeclared"
DIMENSIONS = ("total", "course", "kind", "session", "country", "sector", "gender")
FIELDS = ("dimension", "group", "trainees", "participations", "completions", "hours", "gpu_hours")


def gather(s):
    """What the report is computed from, read in one transaction."""
    now = utcnow()
    sessions = [
        (r.user, r.course_id, r.started_at, r.ended_at or now, r.charged_gpu_ms)
        for r in s.scalars(select(SandboxSession))
    ]
    completions = {
        (r.user, r.course_id)
        for r in s.scalars(select(Credential).where(Credential.revoked_at.is_(None)))
        if r.document
    }
    profiles = {p.user: (p.country, p.sector, p.gender) for p in s.scalars(select(TraineeProfile))}
    return sessions, completions, profiles


def compute(data, catalog=None):
    """Unsuppressed rows ``{dimension, group, trainees, participations, completions, hours, gpu_hours}``."""
    sessions, completions, profiles = data
    courses = catalog.courses if catalog is not None else {}
    cells = defaultdict(lambda: {"trainees": set(), "participations": set(), "completions": set(), "ms": 0.0, "gpu": 0})

    def groups(user, course_id):
        country, sector, gender = profiles.get(user, (None, None, None))
        course = courses.get(course_id)
        yield "total", "all"
        yield "course", course_id
        yield "kind", course.kind if course is not None else "unknown"
        yield "country", country or UNDECLARED
        yield "sector", sector or UNDECLARED
        yield "gender", gender or UNDECLARED

    def add(key, user, course_id, ms=0.0, gpu=0):
        cell = cells[key]
        cell["trainees"].add(user)
        cell["participations"].add((user, course_id))
        if (user, course_id) in completions:
            cell["completions"].add((user, course_id))
        cell["ms"] += ms
        cell["gpu"] += gpu

    for user, course_id, start, end, gpu_ms in sessions:
        ms = max(0.0, (end - start).total_seconds() * 1000)
        for key in groups(user, course_id):
            add(key, user, course_id, ms, gpu_ms)
        course = courses.get(course_id)
        for window in course.sessions if course is not None else ():
            if start < window.end and end > window.start:
                add(("session", f"{course_id} {window.start.isoformat()}"), user, course_id, ms, gpu_ms)
    for user, course_id in completions:  # a credential without a recorded sandbox session still counts
        for key in groups(user, course_id):
            add(key, user, course_id)
    rows = []
    for (dimension, group), cell in cells.items():
        rows.append(
            {
                "dimension": dimension,
                "group": group,
                "trainees": len(cell["trainees"]),
                "participations": len(cell["participations"]),
                "completions": len(cell["completions"]),
                "hours": round(cell["ms"] / MS_PER_HOUR, 2),
                "gpu_hours": round(cell["gpu"] / MS_PER_HOUR, 2),
            }
        )
    rows.sort(key=lambda r: (DIMENSIONS.index(r["dimension"]), r["group"]))
    return rows


def suppress(rows, minimum=MIN_CELL):
    """Rows about fewer than ``minimum`` people keep their dimension and group only (the rest is None); a
    completions count under ``minimum`` (but above 0) is suppressed on its own."""
    out = []
    for row in rows:
        if row["trainees"] < minimum:
            row = {k: (v if k in ("dimension", "group") else None) for k, v in row.items()}
        elif 0 < row["completions"] < minimum:
            row = row | {"completions": None}
        out.append(row)
    return out


def report(data, catalog=None, minimum=MIN_CELL):
    return suppress(compute(data, catalog), minimum)


def to_csv(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"<{MIN_CELL}" if v is None else v) for k, v in row.items()})
    return out.getvalue()


# -- learners' declarations ---------------------------------------------------


def check_declaration(country, sector, gender):
    """The declaration as stored (None for a field left empty); ValueError saying what is wrong."""
    country = (country or "").strip().upper() or None
    if country is not None and not (len(country) == 2 and country.isascii() and country.isalpha()):
        raise ValueError("The country is a two-letter ISO 3166 code, e.g. DE, FR or IT.")
    sector = sector or None
    if sector is not None and sector not in SECTORS:
        raise ValueError(f"The sector is one of {', '.join(SECTORS)}.")
    gender = gender or None
    if gender is not None and gender not in GENDERS:
        raise ValueError(f"The gender is one of {', '.join(GENDERS)}.")
    return country, sector, gender


def declare(s, user, country, sector, gender):
    row = s.get(TraineeProfile, user)
    if row is None:
        row = TraineeProfile(user=user)
        s.add(row)
    row.country, row.sector, row.gender, row.declared_at = country, sector, gender, utcnow()
    return declaration(s, user)


def declaration(s, user):
    """``{country, sector, gender, declared_at}`` once the learner was asked (fields None where they declared
    nothing, or deleted it); None before they were asked."""
    row = s.get(TraineeProfile, user)
    if row is None:
        return None
    return {
        "country": row.country,
        "sector": row.sector,
        "gender": row.gender,
        "declared_at": row.declared_at.isoformat(),
    }


def forget(s, user):
    """Delete what the learner declared; the empty row remembers they were asked (so they are not asked again)."""
    row = s.get(TraineeProfile, user)
    if row is None:
        row = TraineeProfile(user=user)
        s.add(row)
    row.country = row.sector = row.gender = None
    row.declared_at = utcnow()
