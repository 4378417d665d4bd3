"""The course model: what a validated ``course.yaml`` says."""

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

_MEMORY_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_memory(text):
    """``16G`` -> bytes (decimal units; ``Gi`` and friends are binary)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGT]i?)", text)
    if not m:
        raise ValueError(f"not a memory size: {text!r} (expected e.g. 16G or 512Mi)")
    return int(float(m.group(1)) * _MEMORY_UNITS[m.group(2)])


def parse_duration(text):
    """``4h``, ``90m``, ``1h30m``, ``45s`` -> seconds."""
    m = re.fullmatch(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?", text or "")
    if not text or not m:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 4h, 90m or 1h30m)")
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60 + int(m.group(3) or 0)


@dataclass(frozen=True)
class GpuRequest:
    kind: str
    count: int = 1


@dataclass(frozen=True)
class SandboxRequest:
    image: str
    gpu: GpuRequest | None = None
    cpu: float | None = None
    memory: str | None = None
    max_session: str | None = None
    disk: str | None = None  # what a learner's work folder may hold (local sandboxes)

    @property
    def memory_bytes(self):
        return parse_memory(self.memory) if self.memory else None

    @property
    def max_session_seconds(self):
        return parse_duration(self.max_session) if self.max_session else None


@dataclass(frozen=True)
class IdleRule:
    """Stop a sandbox nobody uses: idle for ``after_s`` (no kernel activity, no GPU use), a warning, ``grace_s``
    more, then a stop; the charge ends where the idleness began."""

    after_s: int
    grace_s: int = 300

    def to_dict(self):
        return {"after_s": self.after_s, "grace_s": self.grace_s}


@dataclass(frozen=True)
class WarmSession:
    """A scheduled event of the course: ``expected`` learners from ``start`` (aware datetimes) to ``end``."""

    start: datetime
    end: datetime
    expected: int

    def to_dict(self):
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "expected": self.expected}


@dataclass(frozen=True)
class Schedule:
    start: date
    end: date | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class LearnerQuota:
    window: str
    gpu_hours: float | None = None
    cpu_hours: float | None = None


@dataclass(frozen=True)
class SlurmPlacement:
    """Where a course's sandboxes run on a Slurm cluster (``slurm:`` in course.yaml); None: the spawner's default."""

    partition: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None

    def to_dict(self):
        return {
            "partition": self.partition,
            "qos": self.qos,
            "reservation": self.reservation,
            "constraint": self.constraint,
        }


@dataclass(frozen=True)
class Course:
    id: str
    title: str
    kind: str
    enrollment: str
    instructors: tuple
    sandbox: SandboxRequest
    path: Path
    description: str = ""
    roster: tuple = ()
    helpers: tuple = ()  # teaching assistants: the help queue and, with consent, a learner's sandbox; no grading
    enrollment_code: str | None = None
    schedule: Schedule | None = None
    allocation: str | None = None
    budget: dict = field(default_factory=dict)
    quota: LearnerQuota | None = None
    assignments: tuple = ()
    idle: IdleRule | None = None
    sessions: tuple = ()  # WarmSession, in start order
    slurm: SlurmPlacement = SlurmPlacement()
    staff: frozenset = frozenset()  # instructors granted by logins (OIDC claims, LMS roles), not the course file
    # what completing the course takes (a credential is issued then): {assignments: {id: {min_score}},
    # sessions: N, sign_off: bool, skills: [{name, url}]}; None: the course issues no credential
    completion: dict | None = None

    @property
    def needs_gpu(self):
        return self.sandbox.gpu is not None

    def is_instructor(self, name):
        return name in self.instructors or name in self.staff

    def is_helper(self, name):
        """A teaching assistant of the course (instructors are not helpers; they may do all a helper does)."""
        return name in self.helpers and not self.is_instructor(name)

    def is_staff(self, name):
        """Instructors and helpers: who answers the course's raised hands."""
        return self.is_instructor(name) or name in self.helpers

    def on_roster(self, name):
        return name in self.roster

    def schedule_state(self, today):
        """``"open"``, ``"not-started"`` or ``"ended"`` for the date ``today``."""
        if self.schedule is None:
            return "open"
        if today < self.schedule.start:
            return "not-started"
        if self.schedule.end is not None and today > self.schedule.end:
            return "ended"
        return "open"

    def summary(self):
        """A JSON-ready description, as the API and ``courses list`` show it."""
        gpu = self.sandbox.gpu
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "kind": self.kind,
            "enrollment": self.enrollment,
            "instructors": list(self.instructors),
            "helpers": list(self.helpers),
            "schedule": None
            if self.schedule is None
            else {
                "start": self.schedule.start.isoformat(),
                "end": self.schedule.end.isoformat() if self.schedule.end else None,
                "timezone": self.schedule.timezone,
            },
            "sandbox": {
                "image": self.sandbox.image,
                "gpu": None if gpu is None else {"kind": gpu.kind, "count": gpu.count},
                "cpu": self.sandbox.cpu,
                "memory": self.sandbox.memory,
                "max_session": self.sandbox.max_session,
                "disk": self.sandbox.disk,
            },
            "allocation": self.allocation,
            "slurm": self.slurm.to_dict(),
            "assignments": list(self.assignments),
            "idle": None if self.idle is None else self.idle.to_dict(),
            "sessions": [w.to_dict() for w in self.sessions],
            "completion": self.completion,
        }
