"""Units of work over the credential tables (each a function of a session: see :mod:`aifhub.state.db`)."""

import json
from uuid import uuid4

from sqlalchemy import func, select

from ..errors import Refusal
from ..ledger.models import SandboxSession
from ..ledger.units import MS_PER_HOUR
from ..state.base import utcnow
from .models import Credential, SignOff
from .statuslist import SIZE


def summary(c):
    return {
        "id": c.id,
        "user": c.user,
        "course_id": c.course_id,
        "issued_at": c.issued_at.isoformat(),
        "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
        "revoked_by": c.revoked_by,
        "revoke_reason": c.revoke_reason,
    }


def current(s, user, course_id):
    """The learner's credential for the course that is not revoked, or None."""
    return s.scalars(
        select(Credential).where(
            Credential.user == user, Credential.course_id == course_id, Credential.revoked_at.is_(None)
        )
    ).first()


def reserve(s, user, course_id, status_list):
    """A new credential row (its id and status list index), or None when the learner holds one already."""
    if current(s, user, course_id) is not None:
        return None
    highest = s.scalar(select(func.max(Credential.status_index)))
    index = 0 if highest is None else highest + 1
    if index >= SIZE:
        raise Refusal("credentials-full", f"The status list is full ({SIZE} credentials): no more can be issued.")
    row = Credential(
        id=str(uuid4()), user=user, course_id=course_id, status_index=index, status_list=status_list, document=""
    )
    s.add(row)
    s.flush()
    return {"id": row.id, "status_index": index}


def store_document(s, credential_id, document):
    row = s.get(Credential, credential_id)
    row.document = json.dumps(document, ensure_ascii=False)
    return summary(row)


def drop(s, credential_id):
    """Forget a reserved row whose signing failed."""
    row = s.get(Credential, credential_id)
    if row is not None and not row.document:
        s.delete(row)


def get(s, credential_id):
    row = s.get(Credential, credential_id)
    if row is None or not row.document:
        return None
    return summary(row) | {"document": json.loads(row.document), "status_list": row.status_list}


def of_user(s, user):
    rows = s.scalars(select(Credential).where(Credential.user == user).order_by(Credential.issued_at))
    return [summary(r) for r in rows if r.document]


def of_course(s, course_id):
    rows = s.scalars(select(Credential).where(Credential.course_id == course_id).order_by(Credential.issued_at))
    return [summary(r) for r in rows if r.document]


def revoke(s, course_id, credential_id, by, reason):
    row = s.get(Credential, credential_id)
    if row is None or row.course_id != course_id or not row.document:
        raise Refusal("no-credential", f"No credential {credential_id} in the course {course_id}.")
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by, row.revoke_reason = utcnow(), by, reason or None
    return summary(row)


def revoked_indices(s, status_list):
    return list(
        s.scalars(
            select(Credential.status_index).where(
                Credential.status_list == status_list, Credential.revoked_at.is_not(None)
            )
        )
    )


def sign_off(s, course_id, user, by):
    row = s.get(SignOff, (course_id, user))
    if row is None:
        s.add(SignOff(course_id=course_id, user=user, signed_by=by, signed_at=utcnow()))
        return by
    return row.signed_by


def withdraw_sign_off(s, course_id, user):
    row = s.get(SignOff, (course_id, user))
    if row is not None:
        s.delete(row)


def signed_off(s, course_id):
    """``{user: signed_by}`` of a course."""
    return {r.user: r.signed_by for r in s.scalars(select(SignOff).where(SignOff.course_id == course_id))}


def training(s, course_id, users=None):
    """``{user: {"spans": [(start, end)], "hours", "gpu_hours"}}`` from the ledger's sandbox sessions."""
    q = select(SandboxSession).where(SandboxSession.course_id == course_id)
    if users is not None:
        q = q.where(SandboxSession.user.in_(list(users)))
    now = utcnow()
    out = {}
    for row in s.scalars(q):
        entry = out.setdefault(row.user, {"spans": [], "hours": 0.0, "gpu_hours": 0.0})
        entry["spans"].append((row.started_at, row.ended_at))
        entry["hours"] += ((row.ended_at or now) - row.started_at).total_seconds() / 3600
        entry["gpu_hours"] += row.charged_gpu_ms / MS_PER_HOUR
    return out
