"""Sandbox sessions at the bottom of the ledger: the active session of a server, ending one, the GPU devices
sessions hold, and learners' sandbox uids. Everything above (metering, admission) builds on these."""

from sqlalchemy import func, select

from .models import GpuClaim, LearnerUid, SandboxSession, utcnow


def active_session(db, user, server_name):
    return db.scalar(
        select(SandboxSession).where(
            SandboxSession.state == "active",
            SandboxSession.user == user,
            SandboxSession.server_name == server_name,
        )
    )


def active_sessions(db):
    return list(db.scalars(select(SandboxSession).where(SandboxSession.state == "active")))


def end_session(session, reason, at=None):
    session.state = "ended"
    session.ended_at = at or utcnow()
    session.end_reason = reason
    session.claims.clear()


def claimed_devices(db):
    return set(db.scalars(select(GpuClaim.device_id)))


def free_devices(db, inventory, kind):
    """Devices of the pool that match ``kind`` and nobody holds, in id order."""
    taken = claimed_devices(db)
    return [d for d in inventory if d.matches(kind) and d.id not in taken]


def learner_uid(db, user, first_uid):
    """The learner's sandbox uid, allocated once and kept."""
    row = db.get(LearnerUid, user)
    if row is None:
        highest = db.scalar(select(func.max(LearnerUid.uid)))
        row = LearnerUid(user=user, uid=max(first_uid, (highest or 0) + 1))
        db.add(row)
        db.flush()
    return row.uid
