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
            exists = s.scalar(select(LtiScore.id).where(LtiScore.link_id == link.id, LtiScore.assignment_id == assignment,
                                                        LtiScore.user == user, LtiScore.fingerprint == fp))
            if exists is None:
                s.add(LtiScore(link_id=link.id, assignment_id=assignment, user=user, lti_user_id=ids[user],
                               score=float(row["score"]), max_score=float(row["max_score"] or 0),
                               graded_at=row.get("timestamp") or "", fingerprint=fp))
                added += 1
    return added


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
        with self.core.db.session() as s:
            has_links = s.scalar(select(LtiLink.id).where(LtiLink.course_id == course_id,
                                                          LtiLink.lineitems_url.is_not(None)).limit(1))
        if has_links is None:
            return 0
        released = set(released_to)
        rows = [r for r in await self.grading.grades(course_id) if r["student_id"] in released]
        with self.core.db.session() as s:
            added = queue_scores(s, course_id, assignment, rows)
        if added:
            log.info("Queued %d score(s) of %s/%s for the LMS", added, course_id, assignment)
            self.wake.set()
        return added

    # -- sending ---------------------------------------------------------------

    def _due(self, limit=50):
        with self.core.db.session() as s:
            q = (select(LtiScore.id).where(LtiScore.state == "pending", LtiScore.next_attempt_at <= utcnow())
                 .order_by(LtiScore.next_attempt_at, LtiScore.id).limit(limit))
            return list(s.scalars(q))

    async def run_due(self):
        ids = self._due()
        await asyncio.gather(*(self._send_one(i) for i in ids))
        return len(ids)

    async def _lineitem(self, link, assignment, max_score):
        lock = self._lineitem_locks.setdefault((link["id"], assignment), asyncio.Lock())
        async with lock:  # one line item per link and assignment, even with scores sent in parallel
            with self.core.db.session() as s:
                url = s.scalar(select(LtiLineItem.url).where(LtiLineItem.link_id == link["id"],
                                                             LtiLineItem.assignment_id == assignment))
            if url:
                return url
            url = await self.tool.client.find_lineitem(link["lineitems_url"], assignment)
            if url is None:
                course = self.core.catalog.get(link["course_id"])
                url = await self.tool.client.create_lineitem(link["lineitems_url"], {
                    "scoreMaximum": max_score, "label": f"{course.title if course else link['course_id']}: {assignment}",
                    "resourceId": assignment, "tag": "aifhub"})
                log.info("Created the LMS line item of %s/%s: %s", link["course_id"], assignment, url)
            with self.core.db.session() as s:
                s.add(LtiLineItem(link_id=link["id"], assignment_id=assignment, url=url))
            return url

    async def _send_one(self, score_id):
        async with self._limit:
            with self.core.db.session() as s:
                row = s.get(LtiScore, score_id)
                if row is None or row.state != "pending":
                    return
                link = s.get(LtiLink, row.link_id)
                score = row.to_dict() | {"lti_user_id": row.lti_user_id, "created_at": row.created_at}
                link = {"id": link.id, "lineitems_url": link.lineitems_url, "course_id": link.course_id}
            try:
                lineitem = await self._lineitem(link, score["assignment_id"], score["max_score"])
                await self.tool.client.post_score(lineitem, {
                    "userId": score["lti_user_id"], "scoreGiven": score["score"], "scoreMaximum": score["max_score"],
                    "activityProgress": "Completed", "gradingProgress": "FullyGraded",
                    "timestamp": score["created_at"].isoformat(timespec="microseconds"),
                })
            except PlatformError as exc:
                return self._failed(score_id, exc)
            with self.core.db.session() as s:
                row = s.get(LtiScore, score_id)
                row.state, row.sent_at, row.attempts, row.last_error = "sent", utcnow(), row.attempts + 1, None
            log.info("Sent %s's score for %s/%s to the LMS", score["user"], link["course_id"], score["assignment_id"])

    def _failed(self, score_id, exc):
        with self.core.db.session() as s:
            row = s.get(LtiScore, score_id)
            row.attempts += 1
            row.last_error = exc.message[:1000]
            if exc.retryable and row.attempts < self.tool.passback_attempts:
                delay = min(self.tool.passback_backoff * 2 ** (row.attempts - 1), self.tool.passback_backoff_max)
                row.next_attempt_at = utcnow() + timedelta(seconds=delay)
                log.warning("Passback of %s's score for %s failed (attempt %d), again in %.0f s: %s",
                            row.user, row.assignment_id, row.attempts, delay, exc.message)
            else:
                row.state = "failed"
                log.error("Passback of %s's score for %s failed for good after %d attempt(s): %s",
                          row.user, row.assignment_id, row.attempts, exc.message)

    # -- what instructors see and do -----------------------------------------

    def status(self, course_id):
        with self.core.db.session() as s:
            q = (select(LtiScore).join(LtiLink, LtiLink.id == LtiScore.link_id).where(LtiLink.course_id == course_id)
                 .order_by(LtiScore.id.desc()))
            return [row.to_dict() for row in s.scalars(q)]

    def resend(self, course_id, score_ids=None):
        """Put the course's failed scores (or those of ``score_ids``) back in the queue; returns how many."""
        with self.core.db.session() as s:
            q = (select(LtiScore).join(LtiLink, LtiLink.id == LtiScore.link_id)
                 .where(LtiLink.course_id == course_id, LtiScore.state == "failed"))
            if score_ids:
                q = q.where(LtiScore.id.in_(list(score_ids)))
            rows = list(s.scalars(q))
            for row in rows:
                row.state, row.attempts, row.next_attempt_at = "pending", 0, utcnow()
        if rows:
            self.wake.set()
        return len(rows)
