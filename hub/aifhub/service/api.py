"""The JSON API at ``/services/aifhub/api/v1/`` for people and scripts (JupyterHub tokens)."""

from tornado import web

from ..ledger.sandboxes import Refusal
from .base import APIHandler


class MeHandler(APIHandler):
    @web.authenticated
    def get(self):
        self.write_json({
            "name": self.user_name,
            "admin": self.admin,
            "courses": self.core.offers(self.user_name, self.admin),
            "notice": self.core.notices(self.user_name).get(self.user_name),
            "stopped": self.core.stopped_sessions(self.user_name),
        })


class CoursesHandler(APIHandler):
    @web.authenticated
    def get(self):
        """Courses the caller can see; admins and instructors also see broken ones."""
        data = {"courses": self.core.offers(self.user_name, self.admin)}
        if self.admin or self._instructs_any():
            data["broken"] = self.core.broken_courses()
        self.write_json(data)

    def _instructs_any(self):
        return any(c.is_instructor(self.user_name) for c in self.core.catalog.courses.values())


class EnrolHandler(APIHandler):
    @web.authenticated
    async def post(self, course_id):
        body = self.json_body()
        try:
            course = await self.core.enrol(course_id, self.user_name, body.get("code"))
        except Refusal as refusal:
            return self.refuse(refusal)
        self.write_json({"course": course.id, "enrolled": True}, status=201)


class CatalogReloadHandler(APIHandler):
    @web.authenticated
    async def post(self):
        self.require_admin()
        changed = self.core.reload_catalog(force=True)
        await self.core.sync_groups()
        self.write_json({
            "changed": changed,
            "courses": sorted(self.core.catalog.courses),
            "broken": self.core.broken_courses(),
        })


class PoolHandler(APIHandler):
    @web.authenticated
    def get(self):
        self.require_admin()
        self.write_json(self.core.pool_status())
