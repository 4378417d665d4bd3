"""Where a learner's sandbox waits in a batch scheduler's queue (Slurm), as the spawner last saw it.

The spawner of a Slurm sandbox posts its job's state while it pends (``POST api/v1/internal/queue``):
Slurm's reason in words, the reason itself, and Slurm's estimated start; ``GET api/v1/me`` shows it with
the course's offer (``"queue"``) until the job runs or the spawn ends (``"status": null``). Kept in memory:
after a service restart the next look of the spawner (every second or so) puts it back.
"""

from ..errors import Refusal
from .base import InternalHandler
from .membership import USERNAME

FIELDS = {"job_id": int, "state": str, "reason": str, "words": str, "start_estimate": int}
MAX_USERS = 100_000


class QueueBoard:
    def __init__(self):
        self._by_user = {}

    def set(self, user, course_id, status):
        if not USERNAME.match(user or "") or not isinstance(course_id, str) or len(course_id) > 64:
            raise Refusal("bad-queue-status", "Expected a user, a course id and a status (or null).")
        courses = self._by_user.setdefault(user, {})
        if status is None:
            courses.pop(course_id, None)
            if not courses:
                self._by_user.pop(user, None)
            return None
        if not isinstance(status, dict) or len(self._by_user) > MAX_USERS:
            raise Refusal(
                "bad-queue-status", "A status is an object with job_id, state, reason, words, start_estimate."
            )
        clean = {}
        for key, kind in FIELDS.items():
            value = status.get(key)
            clean[key] = kind(value) if value not in (None, "") else None
        clean["words"] = (clean["words"] or "")[:300]
        courses[course_id] = clean
        return clean

    def of(self, user):
        return dict(self._by_user.get(user) or {})


class QueueStatusHandler(InternalHandler):
    async def post(self):
        body = self.json_body()
        board = self.core.queue
        try:
            status = board.set(body.get("user", ""), body.get("course", ""), body.get("status"))
        except (Refusal, ValueError, TypeError) as exc:
            return self.refuse(exc if isinstance(exc, Refusal) else Refusal("bad-queue-status", str(exc)))
        self.write_json({"status": status})
