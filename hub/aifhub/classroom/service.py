"""The classroom's async layer, which the handlers call: who may act on a course's hands, the hub's sharing of a
learner's server with the helper they accepted, the time limit on it, and live updates of the queue.

Consent is the one way in: :meth:`Classroom.accept` (the learner's own call) is the only path to
:meth:`HubClient.share_server`. Every end of a share (the learner ends it, lowers the hand, or its time runs out)
revokes the share and deletes the helper's OAuth tokens for that server; the audit log says each step.
"""

import asyncio
import json
import logging
import os
from datetime import datetime, timezone

from jupyterhub.utils import url_escape_path
from sqlalchemy import select
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..errors import Refusal
from ..service.hubapi import HubAPIError
from ..service.metering_loop import running_courses
from ..state.base import utcnow
from ..ledger.sessions import learner_uid
from .. import fsafe
from ..credentials.store import training
from . import attendance, hands, materials
from .models import Hand

log = logging.getLogger(__name__)


class Board:
    """Live updates of each course's queue: a version counter and an event per course, for the queue's stream."""

    def __init__(self):
        self.versions = {}
        self._changed = {}

    def bump(self, course_id):
        self.versions[course_id] = self.versions.get(course_id, 0) + 1
        event = self._changed.pop(course_id, None)
        if event is not None:
            event.set()

    async def wait(self, course_id, version, timeout):
        """Until the course's queue changes past ``version`` (or ``timeout`` seconds): its new version."""
        if self.versions.get(course_id, 0) == version:
            event = self._changed.setdefault(course_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        return self.versions.get(course_id, 0)


class Classroom:
    """Raised hands, consented help and announcements of the catalog's courses (``hub``: the service's client of
    the hub's REST API; ``share_limit_s``: how long one accept lets a helper in)."""

    def __init__(self, db, courses, membership, hub, share_limit_s=1800, work_root=None, isolated=False, first_uid=0):
        self.db = db
        self.work_root = work_root  # learners' homes (local sandboxes): <work_root>/<user>/<course>/
        self.isolated = isolated
        self.first_uid = first_uid
        self.courses = courses
        self.membership = membership
        self.hub = hub
        self.share_limit_s = share_limit_s
        self.board = Board()
        # where the service reaches learners' servers (through the proxy) to end a guest's open connections at once
        self.servers_url = os.environ.get("AIFHUB_PUBLIC_URL", "").rstrip("/") or None
        self.http = AsyncHTTPClient()

    # -- who may -------------------------------------------------------------

    def course(self, course_id):
        course = self.courses.get(course_id)
        if course is None:
            raise Refusal("unknown-course", f"There is no course '{course_id}'.")
        return course

    async def require_staff(self, course_id, user, admin):
        """The course, when ``user`` is one of its instructors or helpers (or an admin); else a 404/403."""
        course = self.course(course_id)
        if not (admin or course.is_staff(user)):
            raise Refusal("staff-only", f"Only the instructors and helpers of {course.title} see its raised hands.")
        return course

    async def require_instructor(self, course_id, user, admin):
        course = self.course(course_id)
        if not (admin or course.is_instructor(user)):
            raise Refusal("instructors-only", f"Only the instructors of {course.title} may do this.")
        return course

    async def require_learner(self, course_id, user):
        course = self.course(course_id)
        if await self.membership.role(course, user, False) != "learner":
            raise Refusal("not-member", f"You are not a learner of {course.title}; only its learners raise hands.")
        return course

    # -- the learner ---------------------------------------------------------

    async def raise_hand(self, course_id, user, question):
        await self.require_learner(course_id, user)
        question = hands.clean_question(question or "")
        hand = await self.db.run(self._view, hands.raise_hand, course_id, user, question)
        self.board.bump(course_id)
        return hand

    async def lower(self, course_id, user):
        self.course(course_id)
        view, share = await self.db.run(self._lower, course_id, user)
        if share:
            await self._revoke(course_id, user, *share)
        self.board.bump(course_id)
        return view

    async def accept(self, course_id, user):
        """The learner's consent: the helper who asked gets access to the learner's running server of the course,
        for :attr:`share_limit_s` seconds."""
        self.course(course_id)
        server = (await self.db.run(running_courses, user)).get(course_id)
        view = await self.db.run(self._view, hands.accept, course_id, user, server, self.share_limit_s)
        try:
            await self.hub.share_server(user, server, view["helper"])
        except HubAPIError as exc:
            log.warning("Sharing %s/%s with %s failed: %s", user, server, view["helper"], exc)
            await self.db.run(hands.grant_failed, view["id"], str(exc)[:300])
            self.board.bump(course_id)
            raise Refusal("share-failed", "The hub did not grant the access; ask the helper to try again.") from exc
        await self._tell_server(user, server, None)  # the server forgets its cached "no" for the helper
        await self.db.run(
            hands.granted, view["id"], view["helper"], f"access to {user}/{server} until {view['share_until']}"
        )
        self.board.bump(course_id)
        return view

    async def end(self, course_id, user, actor=None, why="ended by the learner"):
        """End the helper's access (or decline their request)."""
        self.course(course_id)
        view, share = await self.db.run(self._end, course_id, user, actor or user, why)
        if share:
            await self._revoke(course_id, user, *share)
        self.board.bump(course_id)
        return view

    async def my_hands(self, user):
        """``{course_id: hand}`` of the learner's live hands."""
        now = utcnow()
        live = await self.db.run(hands.hands_of, user)
        return {cid: hands.hand_view(h, now, learner_view=True) for cid, h in live.items()}

    # -- helpers and instructors ---------------------------------------------

    async def queue(self, course_id, user, admin):
        await self.require_staff(course_id, user, admin)
        return await self.queue_view(course_id)

    async def queue_view(self, course_id):
        now = utcnow()
        return [hands.hand_view(h, now) for h in await self.db.run(hands.queue, course_id)]

    async def take(self, course_id, hand_id, user, admin):
        await self.require_staff(course_id, user, admin)
        view = await self.db.run(self._view, hands.take, course_id, hand_id, user)
        self.board.bump(course_id)
        return view

    async def ask(self, course_id, hand_id, user, admin):
        await self.require_staff(course_id, user, admin)
        view = await self.db.run(self._view, hands.ask, course_id, hand_id, user)
        self.board.bump(course_id)
        return view

    async def audit(self, course_id, user, admin):
        """The course's audit log for its instructors and admins; a learner reads their own entries only
        (helpers read none but their own: they are in the learners' entries as actors)."""
        course = self.course(course_id)
        if admin or course.is_instructor(user):
            rows = await self.db.run(hands.audit, course_id)
        else:
            rows = await self.db.run(hands.audit, course_id, user)
            if not rows and await self.membership.role(course, user, False) is None:
                raise Refusal("not-member", f"You are not in {course.title}.")
        return [hands.audit_view(e) for e in rows]

    # -- announcements -------------------------------------------------------

    async def announce(self, course_id, user, admin, text, session=None):
        course = await self.require_instructor(course_id, user, admin)
        text = hands.clean_announcement(text)
        if session is not None:
            if isinstance(session, bool) or not isinstance(session, int) or not 0 <= session < len(course.sessions):
                raise Refusal(
                    "bad-field",
                    f"'session' must be the index of one of the course's {len(course.sessions)} sessions (from 0).",
                )
        a = await self.db.run(hands.post, course_id, user, text, session)
        return announcement_view(a)

    async def announcements_for(self, course_ids, now=None):
        """``{course_id: [announcement]}``, newest first; a session's announcements only while it runs."""
        now = now or datetime.now(timezone.utc)
        out = {}
        for cid, rows in (await self.db.run(hands.announcements, list(course_ids))).items():
            course = self.courses.get(cid)
            shown = []
            for a in rows:
                if a.session is not None:
                    sessions = course.sessions if course else ()
                    if a.session >= len(sessions) or not sessions[a.session].start <= now <= sessions[a.session].end:
                        continue
                shown.append(announcement_view(a))
            out[cid] = shown
        return out

    # -- materials handed out, and resets -----------------------------------

    def _local_folders(self):
        if self.work_root is None:
            raise Refusal("no-work-folder", "Learners' work folders are not on this machine (Kubernetes sandboxes).")
        return str(self.work_root)

    async def _uids(self, users):
        if not self.isolated:
            return {u: None for u in users}
        return await self.db.run(_learner_uids, list(users), self.first_uid)

    async def push_material(self, course_id, user, admin, name, data, source=""):
        """Put ``data`` as ``name`` in every learner's work folder of the course, never over their own file."""
        course = await self.require_instructor(course_id, user, admin)
        work_root = self._local_folders()
        name = materials.check_file_name(name)
        if len(data) > materials.MAX_BYTES:
            raise Refusal("too-large", f"Push files up to {materials.MAX_BYTES // 2**20} MiB.")
        learners = await self._uids(list(await self.membership.roster(course)))
        result = await asyncio.to_thread(materials.push, work_root, course.id, learners, name, data)
        log.info("%s pushed %s to %d learners of %s", user, name, len(result), course.id)
        return {"course": course.id, "name": name, "source": source, "learners": result}

    async def read_course_file(self, course_id, user, admin, rel):
        """An instructor's file of the course folder (``source/...`` too: a solution), to push."""
        course = await self.require_instructor(course_id, user, admin)
        if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise Refusal("bad-field", "'from' must be a path inside the course folder, e.g. 'source/ps1/ps1.ipynb'.")
        try:
            return await asyncio.to_thread(_read_in, course.path, rel)
        except (OSError, ValueError) as exc:
            raise Refusal("no-material", f"The course folder has no file '{rel}'.") from exc

    async def reset_material(self, course_id, user, rel):
        """The learner's ``rel`` back to the course's version (theirs kept as a backup)."""
        course = self.course(course_id)
        decision = await self.membership.access(course, user, False)
        if not decision.allowed:
            raise Refusal("not-member", decision.message)
        work_root = self._local_folders()
        uid = (await self._uids([user]))[user]
        return await asyncio.to_thread(materials.reset, work_root, course.path, course.id, user, uid, rel)

    # -- attendance ------------------------------------------------------------

    async def attendance(self, course_id, user, admin):
        """Per scheduled session of the course, who had its sandbox running during it and for how long."""
        course = await self.require_instructor(course_id, user, admin)
        spans = await self.db.run(training_spans, course.id)
        return course, attendance.table([(w.start, w.end) for w in course.sessions], spans)

    # -- the time limit ------------------------------------------------------

    async def expire(self):
        """End every share whose time is up (the service's loop calls it every second or so)."""
        for course_id, user in await self.db.run(hands.expired_shares, utcnow()):
            try:
                await self.end(course_id, user, actor="aifhub", why="the time limit ran out")
            except Refusal:
                pass  # ended meanwhile

    async def watch_use(self):
        """Log the first use of each live share: the hub has issued the helper a token for the learner's server
        (their browser opened it)."""
        for hand_id, owner, server, helper in await self.db.run(hands.unused_shares):
            tokens = await self.hub.server_tokens(helper, owner, server or "")
            if tokens:
                when = min(str(t.get("created") or "") for t in tokens)
                await self.db.run(hands.used, hand_id, f"{helper} opened {owner}'s sandbox (login at {when})")

    async def run(self, interval=1.0):
        while True:
            try:
                await self.expire()
                await self.watch_use()
            except HubAPIError as exc:
                log.warning("Watching shares: %s", exc)
            except Exception:
                log.exception("Watching shares failed")
            await asyncio.sleep(interval)

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _view(s, step, *args):
        return hands.hand_view(step(s, *args), utcnow())

    @staticmethod
    def _lower(s, course_id, user):
        hand, share = hands.lower(s, course_id, user)
        return hands.hand_view(hand, utcnow(), learner_view=True), share

    @staticmethod
    def _end(s, course_id, user, actor, why):
        hand, share = hands.end_share(s, course_id, user, actor, why)
        return hands.hand_view(hand, utcnow(), learner_view=True), share

    async def _revoke(self, course_id, owner, helper, server):
        """Take the helper's access away: the share, then their OAuth tokens for that server."""
        detail = []
        try:
            await self.hub.unshare_server(owner, server or "", helper)
            detail.append("share revoked")
            n = await self.hub.revoke_server_tokens(helper, owner, server or "")
            detail.append(f"{n} token(s) of {helper} for the server deleted")
            closed = await self._tell_server(owner, server or "", helper)
            if closed is not None:
                detail.append(f"{closed} open connection(s) of {helper} closed")
        except HubAPIError as exc:
            log.warning("Revoking %s's access to %s/%s failed: %s", helper, owner, server, exc)
            detail.append(f"revocation failed: {exc}"[:300])
        await self.db.run(_record_revoked, course_id, owner, helper, "; ".join(detail))

    async def _tell_server(self, owner, server, close):
        """Have the learner's server forget cached token answers and close ``close``'s websockets (the sandbox's
        :mod:`aifhub.sandboxside.guests`). Returns how many it closed, None when it could not be told."""
        if self.servers_url is None:
            return None
        path = f"/user/{url_escape_path(owner)}/" + (f"{url_escape_path(server)}/" if server else "")
        req = HTTPRequest(
            f"{self.servers_url}{path}aifhub/guests",
            method="POST",
            headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}"},
            body=json.dumps({"close": close}),
            request_timeout=5,
            follow_redirects=False,
        )
        try:
            resp = await self.http.fetch(req, raise_error=False)
        except OSError as exc:
            log.warning("Telling %s's server about %s: %s", owner, close, exc)
            return None
        if resp.code != 200:
            log.warning("Telling %s's server about %s: %s %s", owner, close, resp.code, resp.body[:200])
            return None
        return json.loads(resp.body).get("closed", 0)


def _record_revoked(s, course_id, owner, helper, detail):
    hand = hands.live_hand(s, course_id, owner)
    if hand is None:  # lowered: the last hand of the learner in the course
        hand = s.scalar(select(Hand).where(Hand.course_id == course_id, Hand.user == owner).order_by(Hand.id.desc()))
    hands.record(s, hand, "aifhub", "revoked", detail)


def training_spans(s, course_id):
    """``{user: [(started_at, ended_at or None)]}`` of the course's sandbox sessions (the ledger's)."""
    return {user: entry["spans"] for user, entry in training(s, course_id).items()}


def _learner_uids(s, users, first_uid):
    return {u: learner_uid(s, u, first_uid) for u in users}


def _read_in(course_path, rel):
    parts = rel.split("/")
    with fsafe.opened(course_path) as top:
        d, opened = materials._open_below(top, parts[:-1])
        try:
            return d.read(parts[-1], materials.MAX_BYTES)
        finally:
            for o in opened:
                o.close()


def announcement_view(a):
    return {
        "id": a.id,
        "course": a.course_id,
        "session": a.session,
        "author": a.author,
        "text": a.text,
        "posted_at": a.posted_at.isoformat(),
    }
