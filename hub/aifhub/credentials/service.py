"""The credentials of one service: completion progress, issuing, revoking, the status lists, verifying.

A thin async layer over the pure parts (:mod:`.completion`, :mod:`.issuer`) and the units of work
(:mod:`.store`): signing is CPU work (about 50 ms of canonicalisation) and runs on a thread of its own,
never on the event loop; every database access is a unit of work on :meth:`Database.run`.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import IntegrityError

from ..errors import Refusal
from . import completion, store

log = logging.getLogger(__name__)
RESERVE_TRIES = 5


class Credentials:
    """Issuing and verifying the Open Badges of one service's courses."""

    def __init__(self, db, catalog_of, issuer, grading=None):
        self.db = db
        self._catalog_of = catalog_of  # a function: the current catalog ({id: Course})
        self.issuer = issuer
        self.grading = grading
        self._signer = ThreadPoolExecutor(1, thread_name_prefix="aifhub-sign")
        self._lists = {}  # fingerprint -> (revoked indices, signed status list)

    def course(self, course_id):
        course = self._catalog_of().get(course_id)
        if course is None:
            raise Refusal("unknown-course", f"There is no course '{course_id}'.")
        return course

    async def _sign(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._signer, fn, *args)

    # -- completion ----------------------------------------------------------

    async def _grades(self, course):
        rule = course.completion or {}
        if not rule.get("assignments") or self.grading is None:
            return []
        try:
            return await self.grading.grades(course.id)
        except Refusal as exc:  # no gradebook yet: nothing graded
            log.info("No grades for %s: %s", course.id, exc.message)
            return []

    async def progress(self, course, users):
        """``{user: {complete, conditions, figures}}`` for ``users`` of ``course`` (which has a completion rule)."""
        rule = course.completion or {}
        rows = await self._grades(course)
        training = await self.db.run(store.training, course.id, users)
        signoffs = await self.db.run(store.signed_off, course.id)
        windows = [(w.start, w.end) for w in course.sessions]
        out = {}
        for user in users:
            scores = completion.best_scores(rows, user)
            mine = training.get(user, {"spans": [], "hours": 0.0, "gpu_hours": 0.0})
            sessions = completion.attended(windows, mine["spans"])
            result = completion.evaluate(rule, scores, sessions, signoffs.get(user))
            result["figures"] = {
                "assignments": {a: scores[a] for a in (rule.get("assignments") or {}) if a in scores},
                "sessions": sessions,
                "hours": round(mine["hours"], 4),
                "gpu_hours": round(mine["gpu_hours"], 4),
                "signed_off_by": signoffs.get(user),
            }
            out[user] = result
        return out

    # -- issuing -------------------------------------------------------------

    async def claim(self, user, course_id):
        """Issue ``user``'s credential for the course if they completed it (a Refusal saying what is missing
        otherwise); returns the credential's summary (the one they hold already, when they do)."""
        course = self.course(course_id)
        if not course.completion:
            raise Refusal("no-completion", f"{course.title} issues no credential (its course.yaml has no completion:).")
        held = await self.db.run(store.current, user, course.id)
        if held is not None:
            return store.summary(held)
        result = (await self.progress(course, [user]))[user]
        if not result["complete"]:
            missing = "; ".join(c["what"] for c in result["conditions"] if not c["met"])
            raise Refusal("not-complete", f"You have not completed {course.title} yet: missing {missing}.")
        return await self.issue(user, course, result["figures"])

    async def issue(self, user, course, figures):
        key = self.issuer.keys.current
        for attempt in range(RESERVE_TRIES):  # PostgreSQL: two issuers may take the same next index at once
            try:
                reserved = await self.db.run(store.reserve, user, course.id, key.fingerprint)
                break
            except IntegrityError:
                if attempt == RESERVE_TRIES - 1:
                    raise
        if reserved is None:  # issued meanwhile
            return store.summary(await self.db.run(store.current, user, course.id))
        rule = course.completion or {}
        try:
            document = await self._sign(
                self.issuer.completion,
                reserved["id"],
                reserved["status_index"],
                course,
                rule,
                user,
                figures,
                tuple(rule.get("skills") or ()),
            )
        except BaseException:
            await self.db.run(store.drop, reserved["id"])
            raise
        summary = await self.db.run(store.store_document, reserved["id"], document)
        log.info("Issued credential %s to %s for %s", reserved["id"], user, course.id)
        return summary

    async def revoke(self, course_id, credential_id, by, reason=""):
        summary = await self.db.run(store.revoke, course_id, credential_id, by, reason)
        log.info("Credential %s of %s revoked by %s", credential_id, summary["user"], by)
        return summary

    async def sign_off(self, course_id, user, by):
        return await self.db.run(store.sign_off, course_id, user, by)

    # -- reading and verifying ----------------------------------------------

    async def get(self, credential_id):
        return await self.db.run(store.get, credential_id)

    async def of_user(self, user):
        return await self.db.run(store.of_user, user)

    async def of_course(self, course_id):
        return await self.db.run(store.of_course, course_id)

    async def status_list(self, fingerprint):
        """The signed status list of one of our keys (re-signed only when its revocations change); None if
        no key of ours has that fingerprint."""
        if self.issuer.keys.by_fingerprint(fingerprint) is None:
            return None
        revoked = sorted(await self.db.run(store.revoked_indices, fingerprint))
        cached = self._lists.get(fingerprint)
        if cached is not None and cached[0] == revoked:
            return cached[1]
        signed = await self._sign(self.issuer.status_list, fingerprint, revoked)
        self._lists[fingerprint] = (revoked, signed)
        return signed

    async def verify(self, credential_id):
        """``(record, result)``: the stored credential checked as a verifier would (proof, issuer, status)."""
        record = await self.get(credential_id)
        if record is None:
            return None, None
        status = await self.status_list(record["status_list"])
        result = await self._sign(self.issuer.check, record["document"], status)
        return record, result

    def close(self):
        self._signer.shutdown(wait=False)
