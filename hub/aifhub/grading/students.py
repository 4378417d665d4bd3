"""Hub user names as nbgrader student ids.

nbgrader's student ids become folder names and gradebook keys, so they must be plain names
(:data:`.coursedir.NAME`); hub user names need not be (``alice@uni.edu``, names with spaces, very
long ones). Each user gets an id once, kept in ``grading_students``: the name itself when it is a
plain name no one holds, else a plain name derived from it plus a hash of the whole name (and a
counter in the unlikely case that is taken too). The table makes ids unique, so no user can take
another's id by choosing a name that looks like it.

Functions here are units of work (their first argument is the database session).
"""

import hashlib
import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .coursedir import NAME
from .models import GradingStudent

MAX_USER = 255  # the hub's own limit on a user name's length
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def candidates(user):
    """The ids ``user`` may get, in order of preference."""
    if NAME.match(user) and len(user) <= 64 and user not in (".", ".."):
        yield user
    base = UNSAFE.sub("_", user).strip("._-")[:40] or "user"
    if not base[0].isalnum():
        base = "u" + base
    digest = hashlib.sha256(user.encode()).hexdigest()[:10]
    yield f"{base}-{digest}"
    for n in range(2, 10_000):
        yield f"{base}-{digest}-{n}"


def student_id(s, user):
    """``user``'s student id, allocated on first use."""
    if not isinstance(user, str) or not user:
        raise ValueError("the user name is empty")
    if len(user) > MAX_USER:
        raise ValueError(f"a user name may have at most {MAX_USER} characters (this one has {len(user)})")
    row = s.get(GradingStudent, user)
    if row is not None:
        return row.student_id
    for candidate in candidates(user):
        if s.scalar(select(GradingStudent.user).where(GradingStudent.student_id == candidate)) is not None:
            continue
        try:
            with s.begin_nested():  # another service thread may take the id (or this user) meanwhile
                s.add(GradingStudent(user=user, student_id=candidate))
        except IntegrityError:
            row = s.get(GradingStudent, user)
            if row is not None:
                return row.student_id
            continue
        return candidate
    raise ValueError(f"no student id is free for {user[:40]!r}")


def student_ids(s, users):
    """``{user: student id}`` for each of ``users`` (allocating those that have none)."""
    return {user: student_id(s, user) for user in users}


def users_of(s, ids):
    """``{student id: user}`` for the ids given; an id no user has (a folder from before ids were
    allocated) stands for the user of that name."""
    ids = list(ids)
    found = {
        sid: user
        for sid, user in s.execute(
            select(GradingStudent.student_id, GradingStudent.user).where(GradingStudent.student_id.in_(ids))
        )
    }
    return {sid: found.get(sid, sid) for sid in ids}
