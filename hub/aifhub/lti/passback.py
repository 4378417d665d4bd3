"""AGS grade passback: when feedback is released, each learner's score goes to the LMS line item of the
assignment (created once per linked course), with its score, maximum and timestamp.

Every grade is one row of ``lti_scores``, unique per (link, assignment, learner, grade): releasing the
same grade again sends nothing. Rows are sent by a loop with bounded concurrency; a failure that may
pass is retried with exponential backoff, and after the last attempt (or at once, for a refusal that
will not pass) the row is ``failed``: instructors see it on the course page and can resend it.
"""

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select

from ..ledger.models import utcnow
from .client import PlatformError
from .models import LtiLineItem, LtiLink, LtiScore, LtiUser

log = logging.getLogger(__name__)


def fingerprint(row):
    return f"{row['score']:g}/{row['max_score']:g}@{row['timestamp']}"


def queue_scores(s, course_id, assignment, rows):
    """Add a pending score for each graded row of ``assignment`` not queued before; returns how many."""
    links = list(s.scalars(select(LtiLink).where(LtiLink.course_id == course_id, LtiLink.lineitems_url.is_not(None))))
    added = 0
    for link in links:
        ids = dict(s.execute(select(LtiUser.user, LtiUser.lti_user_id).where(LtiUser.issuer == link.issuer)).all())
        for row in rows:
            if row.get("assignment_id") != assignment or row.get("score") is None or not row.get("submitted"):
                continue
            user = row["student_id"]
            if user not in ids:
                continue  # not a learner of this LMS (no launch, not on its roster)
            fp = fingerprint(row)
            exists = s.scalar(
                select(LtiScore.id).where(
                    LtiScore.link_id == link.id,
                    LtiScore.assignment_id == assignment,
                    LtiScore.user == user,
                    LtiScore.fingerprint == fp,
                )
            )
            if exists is None:
                s.add(
                    LtiScore(
                        link_id=link.id,
                        assignment_id=assignment,
                        user=user,
                        lti_user_id=ids[user],
                        score=float(row["score"]),
                        max_score=float(row["max_score"] or 0),
                        graded_at=row.get("timestamp") or "",
                        fingerprint=fp,
                    )
                )
                added += 1
    return added


def _has_ags_link(s, course_id):
    return (
        s.scalar(select(LtiLink.id).where(LtiLink.course_id == course_id, LtiLink.lineitems_url.is_not(None)).limit(1))
        is not None
    )


def _due(s, limit):
    q = (
        select(LtiScore.id)
        .where(LtiScore.state == "pending", LtiScore.next_attempt_at <= utcnow())
        .order_by(LtiScore.next_attempt_at, LtiScore.id)
        .limit(limit)
    )
    return list(s.scalars(q))


def _known_lineitem(s, link_id, assignment):
    return s.scalar(
        select(LtiLineItem.url).where(LtiLineItem.link_id == link_id, LtiLineItem.assignment_id == assignment)
    )


def _keep_lineitem(s, link_id, assignment, url):
    s.add(LtiLineItem(link_id=link_id, assignment_id=assignment, url=url))


def _to_send(s, score_id):
    row = s.get(LtiScore, score_id)
    if row is None or row.state != "pending":
        return None
    link = s.get(LtiLink, row.link_id)
    return (
        row.to_dict() | {"lti_user_id": row.lti_user_id, "created_at": row.created_at},
        {"id": link.id, "lineitems_url": link.lineitems_url, "course_id": link.course_id},
    )


def _sent(s, score_id):
    row = s.get(LtiScore, score_id)
    row.state, row.sent_at, row.attempts, row.last_error = "sent", utcnow(), row.attempts + 1, None


def _attempt_failed(s, score_id, message, retryable, attempts, backoff, backoff_max):
    """Count a failed attempt; returns ``(user, assignment, attempts, delay or None when failed for good)``."""
    row = s.get(LtiScore, score_id)
    row.attempts += 1
    row.last_error = message[:1000]
    delay = None
    if retryable and row.attempts < attempts:
        delay = min(backoff * 2 ** (row.attempts - 1), backoff_max)
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
    else:
        row.state = "failed"
    return row.user, row.assignment_id, row.attempts, delay


def _status(s, course_id):
    q = (
        select(LtiScore)
        .join(LtiLink, LtiLink.id == LtiScore.link_id)
        .where(LtiLink.course_id == course_id)
        .order_by(LtiScore.id.desc())
    )
    return [row.to_dict() for row in s.scalars(q)]


def _resend(s, course_id, score_ids):
    q = (
        select(LtiScore)
        .join(LtiLink, LtiLink.id == LtiScore.link_id)
        .where(LtiLink.course_id == course_id, LtiScore.state == "failed")
    )
    if score_ids:
        q = q.where(LtiScore.id.in_(list(score_ids)))
    rows = list(s.scalars(q))
    for row in rows:
        row.state, row.attempts, row.next_attempt_at = "pending", 0, utcnow()
    return len(rows)


class Passback:
    def __init__(self, tool, core, grading):
        self.tool = tool
        self.core = core
        self.grading = grading
        self.wake = asyncio.Event()
        self._lineitem_locks = {}
        self._limit = asyncio.Semaphore(tool.passback_concurrency)

    async def feedback_released(self, course_id, assignment, released_to):
        """The grading side's hook: feedback of ``assignment`` went out to ``released_to``."""
        if not await self.core.db.run(_has_ags_link, course_id):
            return 0
        released = set(released_to)
        rows = [r for r in await self.grading.grades(course_id) if r["student_id"] in released]
        added = await self.core.db.run(queue_scores, course_id, assignment, rows)
        if added:
            log.info("Queued %d score(s) of %s/%s for the LMS", added, course_id, assignment)
            self.wake.set()
        return added

    # -- sending ---------------------------------------------------------------

    async def run_due(self, limit=50):
        ids = await self.core.db.run(_due, limit)
        await asyncio.gather(*(self._send_one(i) for i in ids))
        return len(ids)

    async def _lineitem(self, link, assignment, max_score):
        lock = self._lineitem_locks.setdefault((link["id"], assignment), asyncio.Lock())
        async with lock:  # one line item per link and assignment, even with scores sent in parallel
            url = await self.core.db.run(_known_lineitem, link["id"], assignment)
            if url:
                return url
            url = await self.tool.client.find_lineitem(link["lineitems_url"], assignment)
            if url is None:
                course = self.core.catalog.get(link["course_id"])
                url = await self.tool.client.create_lineitem(
                    link["lineitems_url"],
                    {
                        "scoreMaximum": max_score,
                        "label": f"{course.title if course else link['course_id']}: {assignment}",
                        "resourceId": assignment,
                        "tag": "aifhub",
                    },
                )
                log.info("Created the LMS line item of %s/%s: %s", link["course_id"], assignment, url)
            await self.core.db.run(_keep_lineitem, link["id"], assignment, url)
            return url

    async def _send_one(self, score_id):
        async with self._limit:
            found = await self.core.db.run(_to_send, score_id)
            if found is None:
                return
            score, link = found
            try:
                lineitem = await self._lineitem(link, score["assignment_id"], score["max_score"])
                await self.tool.client.post_score(
                    lineitem,
                    {
                        "userId": score["lti_user_id"],
                        "scoreGiven": score["score"],
                        "scoreMaximum": score["max_score"],
                        "activityProgress": "Completed",
                        "gradingProgress": "FullyGraded",
                        "timestamp": score["created_at"].isoformat(timespec="microseconds"),
                    },
                )
            except PlatformError as exc:
                user, assignment, attempts, delay = await self.core.db.run(
                    _attempt_failed,
                    score_id,
                    exc.message,
                    exc.retryable,
                    self.tool.passback_attempts,
                    self.tool.passback_backoff,
                    self.tool.passback_backoff_max,
                )
                if delay is None:
                    log.error(
                        "Passback of %s's score for %s failed for good after %d attempt(s): %s",
                        user,
                        assignment,
                        attempts,
                        exc.message,
                    )
                else:
                    log.warning(
                        "Passback of %s's score for %s failed (attempt %d), again in %.0f s: %s",
                        user,
                        assignment,
                        attempts,
                        delay,
                        exc.message,
                    )
                return
            await self.core.db.run(_sent, score_id)
            log.info("Sent %s's score for %s/%s to the LMS", score["user"], link["course_id"], score["assignment_id"])

    # -- what instructors see and do -----------------------------------------

    async def status(self, course_id):
        return await self.core.db.run(_status, course_id)

    async def resend(self, course_id, score_ids=None):
        """Put the course's failed scores (or those of ``score_ids``) back in the queue; returns how many."""
        count = await self.core.db.run(_resend, course_id, score_ids)
        if count:
            self.wake.set()
        return count
