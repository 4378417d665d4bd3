"""Endpoints the hub's spawner calls: offers for the spawn form, admission, running (a pending pod started), release."""

from tornado import web

from ..errors import Refusal
from .base import InternalHandler


class OffersHandler(InternalHandler):
    async def get(self):
        user = self.get_argument("user")
        admin = self.get_argument("admin", "0") == "1"
        self.write_json(
            {"courses": await self.core.admission.offers(user, admin), "pool": await self.core.admission.pool_status()}
        )


class AdmitHandler(InternalHandler):
    async def post(self):
        body = self.json_body()
        user, server_name, course = self.text_arguments(body, "user", "server_name", "course")
        try:
            admission = await self.core.admission.admit(
                user,
                server_name,
                course,
                bool(body.get("admin")),
                warm=bool(body.get("warm")),
                pending=bool(body.get("pending")),
            )
        except Refusal as refusal:
            return self.refuse(refusal)
        if "waiting" in admission:  # in the GPU waitlist: the spawner waits (GET waitlist/<id>) and asks again
            return self.write_json(admission, status=202)
        grading = self.settings.get("aifhub_grading")
        if grading is not None and admission["role"] in ("instructor", "admin"):
            admission["grading_gid"] = await grading.group_id(admission["course"]["id"])  # formgrader's group
        self.write_json(admission, status=201)


class ReleaseHandler(InternalHandler):
    async def post(self):
        body = self.json_body()
        session_id = await self.core.admission.release(
            body.get("user", ""), body.get("server_name", ""), body.get("reason", "stopped")
        )
        self.write_json({"released": session_id})


class RunningHandler(InternalHandler):
    async def post(self):
        body = self.json_body()
        self.write_json(
            {
                "running": await self.core.admission.running(
                    body.get("user", ""), body.get("server_name", ""), pod=str(body.get("pod") or "")[:320] or None
                )
            }
        )


class WaitlistEntryHandler(InternalHandler):
    """A waiting spawn: GET ``?wait=S`` answers when its entry changes state (or after S seconds, at most 25),
    DELETE ``?user=NAME`` takes it out of the line (the learner stopped the spawn)."""

    def line(self):
        if self.core.waitlist is None:
            raise web.HTTPError(404, "This service keeps no GPU waitlist.")
        return self.core.waitlist

    async def get(self, entry_id):
        try:
            wait = min(25.0, max(0.0, float(self.get_argument("wait", "0"))))
        except ValueError:
            raise web.HTTPError(400, "wait must be a number of seconds.")
        entry = await self.line().wait(int(entry_id), wait)
        if entry is None:
            raise web.HTTPError(404, f"There is no waitlist entry {entry_id}.")
        self.write_json({"entry": entry})

    async def delete(self, entry_id):
        left = await self.line().leave(self.get_argument("user"), entry_id=int(entry_id))
        self.write_json({"left": left})


class WarmHandoverHandler(InternalHandler):
    """The spawner hands the warm sandbox its admission took to the learner: ``{uid, gid, groups, cwd, env, argv}``."""

    async def post(self, warm_id):
        body = self.json_body()
        pool = self.core.admission.warm
        if pool is None:
            raise web.HTTPError(404, "This service keeps no warm sandboxes.")
        missing = [k for k in ("uid", "gid", "cwd", "env", "argv") if k not in body]
        if missing:
            raise web.HTTPError(400, f"Missing: {', '.join(missing)}.")
        try:
            self.write_json(await pool.hand_over(int(warm_id), body))
        except LookupError as exc:
            raise web.HTTPError(409, str(exc))


class SandboxEventHandler(InternalHandler):
    """The spawner reports what happened in a sandbox (``{"user", "course", "kind": "memory"}``)."""

    def post(self):
        body = self.json_body()
        try:
            message = self.core.sandbox_event(body.get("user", ""), body.get("course", ""), body.get("kind", ""))
        except Refusal as refusal:
            return self.refuse(refusal)
        self.write_json({"message": message}, status=201)


class NoticesHandler(InternalHandler):
    async def get(self):
        self.write_json({"notices": await self.core.notices()})


class UsersCreatedHandler(InternalHandler):
    """The hub created users (a login, its API, its admin page): put them back in their courses' groups."""

    async def post(self):
        users = self.json_body().get("users")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            return self.write_json({"status": 400, "message": 'Send {"users": ["<name>", ...]}.'}, status=400)
        self.write_json({"added": await self.core.membership.resync_users(users)})
