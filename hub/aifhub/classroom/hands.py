"""Raised hands: the help queue of a course, the learner's consent to be looked at, and the audit log.

A hand goes ``raised`` -> ``taken`` (a helper is coming) -> ``asked`` (the helper asks to look inside the
learner's sandbox) -> ``shared`` (the learner accepted; the helper may use that one server until
``share_until``) and back to ``taken`` when the share ends (the learner ends it, or its time runs out);
lowering the hand closes it from any state, and ends its share too. Nobody reaches a learner's server
without the learner's accept: only :func:`accept` puts a hand in ``shared``, and only for its learner.

Every step is written to the audit log in the same transaction as the step itself. Pure functions first,
then units of work (functions of a session, run by :meth:`aifhub.state.db.Database.run`).
"""

from datetime import timedelta

from sqlalchemy import select

from ..errors import Refusal
from ..state.base import utcnow
from .models import Announcement, AuditEntry, Hand

LIVE = ("raised", "taken", "asked", "shared")
QUESTION_MAX = 500
ANNOUNCEMENT_MAX = 2000


# -- pure -----------------------------------------------------------------------


def clean_question(text):
    """The question as stored: stripped, at most :data:`QUESTION_MAX` characters; a 400 otherwise."""
    if not isinstance(text, str):
        raise Refusal("bad-field", "The question must be a string.")
    text = " ".join(text.split())
    if len(text) > QUESTION_MAX:
        raise Refusal("bad-field", f"Keep the question under {QUESTION_MAX} characters (it has {len(text)}).")
    return text


def clean_announcement(text):
    if not isinstance(text, str) or not text.strip():
        raise Refusal("bad-field", "An announcement needs a non-empty 'text'.")
    text = text.strip()
    if len(text) > ANNOUNCEMENT_MAX:
        raise Refusal("bad-field", f"Keep an announcement under {ANNOUNCEMENT_MAX} characters (it has {len(text)}).")
    return text


def hand_view(hand, now, learner_view=False):
    """A hand as the queue (or, ``learner_view``, its learner) sees it."""
    view = {
        "id": hand.id,
        "course": hand.course_id,
        "user": hand.user,
        "question": hand.question,
        "state": hand.state,
        "raised_at": hand.raised_at.isoformat(),
        "waiting_s": int(((hand.taken_at or now) - hand.raised_at).total_seconds()),
        "helper": hand.helper,
        "share_until": hand.share_until.isoformat() if hand.share_until else None,
        "share_left_s": max(0, int((hand.share_until - now).total_seconds())) if hand.share_until else None,
    }
    if hand.state == "closed":
        view["closed_reason"] = hand.close_reason
    if learner_view:
        view.pop("user")
    return view


def audit_view(entry):
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "course": entry.course_id,
        "hand": entry.hand_id,
        "learner": entry.learner,
        "actor": entry.actor,
        "action": entry.action,
        "detail": entry.detail,
    }


# -- units of work --------------------------------------------------------------


def record(s, hand, actor, action, detail=""):
    """Write one step of ``hand`` to the audit log."""
    s.add(
        AuditEntry(
            at=utcnow(),
            course_id=hand.course_id,
            hand_id=hand.id,
            learner=hand.user,
            actor=actor,
            action=action,
            detail=detail,
        )
    )


def live_hand(s, course_id, user):
    return s.scalar(select(Hand).where(Hand.course_id == course_id, Hand.user == user, Hand.state.in_(LIVE)))


def _own_hand(s, course_id, user):
    hand = live_hand(s, course_id, user)
    if hand is None:
        raise Refusal("no-hand", f"You have no raised hand in {course_id}.")
    return hand


def _course_hand(s, course_id, hand_id):
    hand = s.get(Hand, hand_id)
    if hand is None or hand.course_id != course_id or hand.state not in LIVE:
        raise Refusal("no-hand", f"There is no raised hand {hand_id} in {course_id} (lowered, or never raised).")
    return hand


def raise_hand(s, course_id, user, question):
    """Raise ``user``'s hand in ``course_id`` (or change the question of the hand already raised)."""
    hand = live_hand(s, course_id, user)
    if hand is not None:
        if question and question != hand.question:
            hand.question = question
            record(s, hand, user, "question", question)
        return hand
    hand = Hand(course_id=course_id, user=user, question=question, state="raised", raised_at=utcnow())
    s.add(hand)
    s.flush()
    record(s, hand, user, "raised", question)
    return hand


def lower(s, course_id, user, actor=None, why="lowered"):
    """Close ``user``'s hand. Returns ``(hand, share)``: ``share`` is ``(helper, server_name)`` when a share was
    live and must now be revoked, else None."""
    hand = _own_hand(s, course_id, user)
    share = (hand.helper, hand.server_name) if hand.state == "shared" else None
    if share:
        record(s, hand, actor or user, "ended", f"access of {hand.helper} to the sandbox ends: hand {why}")
    hand.state, hand.closed_at, hand.close_reason, hand.share_until = "closed", utcnow(), why, None
    record(s, hand, actor or user, why)
    return hand, share


def take(s, course_id, hand_id, helper):
    """``helper`` takes the hand: the learner sees who is coming. A hand another helper took is refused."""
    hand = _course_hand(s, course_id, hand_id)
    if hand.helper not in (None, helper):
        raise Refusal("taken", f"{hand.helper} has already taken this hand.")
    if hand.state == "raised":
        hand.state, hand.helper, hand.taken_at = "taken", helper, utcnow()
        record(s, hand, helper, "taken")
    return hand


def ask(s, course_id, hand_id, helper):
    """``helper`` asks to look inside the learner's sandbox (taking the hand first if nobody has)."""
    hand = take(s, course_id, hand_id, helper)
    if hand.state == "shared":
        raise Refusal("already-shared", f"{hand.user} has already let you in.")
    if hand.state != "asked":
        hand.state = "asked"
        record(s, hand, helper, "asked")
    return hand


def accept(s, course_id, user, server_name, limit_s):
    """The learner lets the helper who asked into their server ``server_name`` (None: not running) for ``limit_s``
    seconds. Returns the hand (``shared``)."""
    hand = _own_hand(s, course_id, user)
    if hand.state == "shared":
        return hand
    if hand.state != "asked":
        raise Refusal("not-asked", "No helper has asked to look inside your sandbox; there is nothing to accept.")
    if server_name is None:
        raise Refusal("not-running", "Your sandbox of this course is not running; start it, then accept.")
    hand.state, hand.server_name, hand.used_at = "shared", server_name, None
    hand.share_until = utcnow() + timedelta(seconds=limit_s)
    record(s, hand, user, "accepted", f"{hand.helper} may use the sandbox for {limit_s // 60} min")
    return hand


def granted(s, hand_id, helper, detail):
    """The hub granted the share: logged (a grant that failed is logged as such and the hand goes back)."""
    hand = s.get(Hand, hand_id)
    record(s, hand, "aifhub", "granted", detail)


def grant_failed(s, hand_id, detail):
    hand = s.get(Hand, hand_id)
    if hand.state == "shared":
        hand.state, hand.share_until = "asked", None
    record(s, hand, "aifhub", "grant-failed", detail)


def end_share(s, course_id, user, actor, why):
    """End the learner's share (the learner ends it, or its time ran out): the hand goes back to ``taken``.
    Returns ``(hand, (helper, server_name))``."""
    hand = _own_hand(s, course_id, user)
    if hand.state != "shared":
        if hand.state == "asked" and actor == user:  # declining the request ends it too
            hand.state = "taken"
            record(s, hand, user, "declined")
            return hand, None
        raise Refusal("not-shared", "Nobody has access to your sandbox; there is nothing to end.")
    share = (hand.helper, hand.server_name)
    hand.state, hand.share_until = "taken", None
    record(s, hand, actor, "ended", why)
    return hand, share


def expired_shares(s, now):
    """``[(course_id, user)]`` of shares whose time is up."""
    return list(s.execute(select(Hand.course_id, Hand.user).where(Hand.state == "shared", Hand.share_until <= now)))


def queue(s, course_id):
    """The course's live hands, oldest first."""
    return list(s.scalars(select(Hand).where(Hand.course_id == course_id, Hand.state.in_(LIVE)).order_by(Hand.id)))


def hands_of(s, user):
    """``{course_id: hand}`` of ``user``'s live hands."""
    return {h.course_id: h for h in s.scalars(select(Hand).where(Hand.user == user, Hand.state.in_(LIVE)))}


def audit(s, course_id, learner=None, limit=500):
    q = select(AuditEntry).where(AuditEntry.course_id == course_id)
    if learner is not None:
        q = q.where(AuditEntry.learner == learner)
    return list(s.scalars(q.order_by(AuditEntry.id.desc()).limit(limit)))


def unused_shares(s):
    """``[(hand id, learner, server, helper)]`` of live shares the helper has not used yet."""
    q = select(Hand.id, Hand.user, Hand.server_name, Hand.helper).where(Hand.state == "shared", Hand.used_at.is_(None))
    return list(s.execute(q))


def used(s, hand_id, detail):
    """The helper opened the learner's server during the share (the hub issued them a token for it): logged once
    per share."""
    hand = s.get(Hand, hand_id)
    if hand is not None and hand.state == "shared" and hand.used_at is None:
        hand.used_at = utcnow()
        record(s, hand, hand.helper, "used", detail)
        return True
    return False


# -- announcements -----------------------------------------------------------


def post(s, course_id, author, text, session):
    a = Announcement(course_id=course_id, author=author, text=text, session=session, posted_at=utcnow())
    s.add(a)
    s.flush()
    return a


def announcements(s, course_ids, limit=20):
    """``{course_id: [announcement, newest first]}``."""
    if not course_ids:
        return {}
    out = {}
    q = select(Announcement).where(Announcement.course_id.in_(list(course_ids))).order_by(Announcement.id.desc())
    for a in s.scalars(q):
        rows = out.setdefault(a.course_id, [])
        if len(rows) < limit:
            rows.append(a)
    return out
