"""Sandbox sessions at the bottom of the ledger: the active session of a server, ending one, the GPU devices
sessions hold, and learners' sandbox uids. Everything above (metering, admission) builds on these."""

from sqlalchemy import bindparam, func, insert, select

from .models import GpuClaim, LearnerUid, SandboxSession, WaitlistEntry, utcnow


_ACTIVE_SESSION = select(SandboxSession).where(
    SandboxSession.state == "active",
    SandboxSession.user == bindparam("user"),
    SandboxSession.server_name == bindparam("server_name"),
)


def active_session(db, user, server_name):
    return db.scalar(_ACTIVE_SESSION, {"user": user, "server_name": server_name})


def active_sessions(db):
    return list(db.scalars(select(SandboxSession).where(SandboxSession.state == "active")))


def end_session(session, reason, at=None):
    session.state = "ended"
    session.ended_at = at or utcnow()
    session.end_reason = reason
    session.claims.clear()


def claimed_devices(db, now=None):
    """Devices in use by sessions, or held for the learner at the head of the waitlist (until the offer expires)."""
    now = now or utcnow()
    held = db.scalars(
        select(WaitlistEntry.held_devices).where(WaitlistEntry.state == "offered", WaitlistEntry.expires_at > now)
    )
    return set(db.scalars(select(GpuClaim.device_id))) | {d for h in held for d in h.split(",") if d}


def free_devices(db, inventory, kind, course_id=None):
    """Devices of the pool that match ``kind`` and nobody holds, in id order.

    With ``course_id``: shares of a GPU that holds one course at a time (time-slice and MPS shares, which do not
    isolate GPU memory) are free only while no other course's session holds a share of the same GPU."""
    taken = claimed_devices(db)
    free = [d for d in inventory if d.matches(kind) and d.id not in taken]
    if course_id is None or not any(getattr(d, "one_course", False) for d in free):
        return free
    foreign = foreign_gpus(db, inventory, course_id)
    return [d for d in free if not (d.one_course and d.gpu in foreign)]


def foreign_gpus(db, inventory, course_id):
    """Physical GPUs on which a session of another course than ``course_id`` holds a device."""
    gpu_of = {d.id: d.gpu for d in inventory}
    held = db.execute(
        select(GpuClaim.device_id, SandboxSession.course_id).join(
            SandboxSession, GpuClaim.session_id == SandboxSession.id
        )
    )
    return {gpu_of[dev] for dev, course in held if course != course_id and dev in gpu_of}


_UID = select(LearnerUid.uid).where(LearnerUid.user == bindparam("user"))
_HIGHEST_UID = select(func.max(LearnerUid.uid))
_NEW_UID = insert(LearnerUid.__table__)


def learner_uid(db, user, first_uid):
    """The learner's sandbox uid, allocated once and kept (the next free one from ``first_uid`` on)."""
    uid = db.scalar(_UID, {"user": user})
    if uid is None:
        uid = max(first_uid, (db.scalar(_HIGHEST_UID) or 0) + 1)
        db.execute(_NEW_UID, {"user": user, "uid": uid})
    return uid


def mark_running(db, user, server_name, now=None, pod=None):
    """The pending sandbox of ``user``'s server runs now: its session is charged from this moment.
    ``pod``: ``namespace/name`` of the pod that runs it (its GPU readings). Returns the session's id (None when
    there is no active session)."""
    session = active_session(db, user, server_name)
    if session is None:
        return None
    if pod:
        session.pod = pod
    if session.pending:
        now = now or utcnow()
        session.pending = False
        session.started_at = session.last_charged_at = now
    return session.id


def add_gpu_idle(db, idle_ms):
    """Add GPU-idle wall time to active sessions: ``{session id: ms}`` (what the GPU telemetry measured)."""
    for session_id, ms in idle_ms.items():
        session = db.get(SandboxSession, session_id)
        if session is not None and session.state == "active" and ms > 0:
            session.gpu_idle_ms = (session.gpu_idle_ms or 0) + int(ms)
