"""Endpoints the hub's spawner calls: offers for the spawn form, admission and release."""

from ..ledger.sandboxes import Refusal
from .base import InternalHandler


class OffersHandler(InternalHandler):
    async def get(self):
        user = self.get_argument("user")
        admin = self.get_argument("admin", "0") == "1"
        self.write_json({"courses": await self.core.admission.offers(user, admin), "pool": await self.core.admission.pool_status()})


class AdmitHandler(InternalHandler):
    async def post(self):
        body = self.json_body()
        try:
            admission = await self.core.admission.admit(
                body.get("user", ""), body.get("server_name", ""), body.get("course", ""), bool(body.get("admin")),
            )
        except Refusal as refusal:
            return self.refuse(refusal)
        grading = self.settings.get("aifhub_grading")
        if grading is not None and admission["role"] in ("instructor", "admin"):
            admission["grading_gid"] = await grading.group_id(admission["course"]["id"])  # formgrader's group
        self.write_json(admission, status=201)


class ReleaseHandler(InternalHandler):
    async def post(self):
        body = self.json_body()
        session_id = await self.core.admission.release(body.get("user", ""), body.get("server_name", ""), body.get("reason", "stopped"))
        self.write_json({"released": session_id})


class NoticesHandler(InternalHandler):
    async def get(self):
        self.write_json({"notices": await self.core.metering.notices()})


class UsersCreatedHandler(InternalHandler):
    """The hub created users (a login, its API, its admin page): put them back in their courses' groups."""

    async def post(self):
        users = self.json_body().get("users")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            return self.write_json({"status": 400, "message": "Send {\"users\": [\"<name>\", ...]}."}, status=400)
        self.write_json({"added": await self.core.membership.resync_users(users)})
