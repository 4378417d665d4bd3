"""The JSON API at ``/services/aifhub/api/v1/`` for people and scripts (JupyterHub tokens)."""

from tornado import web

from ..ledger.sandboxes import Refusal
from .base import APIHandler


class MeHandler(APIHandler):
    @web.authenticated
    async def get(self):
        view = await self.core.learner_view(self.user_name, self.admin)
        self.write_json({
            "name": self.user_name,
            "admin": self.admin,
            "courses": view["courses"],
            "notice": view["notice"],
            "stopped": view["stopped"],
        })


class CoursesHandler(APIHandler):
    @web.authenticated
    async def get(self):
        """Courses the caller can see; admins and instructors also see broken ones."""
        data = {"courses": await self.core.admission.offers(self.user_name, self.admin)}
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
            course = await self.core.membership.enrol(course_id, self.user_name, body.get("code"))
        except Refusal as refusal:
            return self.refuse(refusal)
        self.write_json({"course": course.id, "enrolled": True}, status=201)


class CatalogReloadHandler(APIHandler):
    @web.authenticated
    async def post(self):
        self.require_admin()
        changed = await self.core.watch_catalog(force=True)
        self.write_json({
            "changed": changed,
            "courses": sorted(self.core.catalog.courses),
            "broken": self.core.broken_courses(),
        })


class PoolHandler(APIHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        self.write_json(await self.core.admission.pool_status())


class RosterHandler(APIHandler):
    """A course's roster, for its instructors: GET lists, POST ``{"users": [...]}`` adds, DELETE ``?user=`` removes."""

    def course(self, course_id):
        course = self.core.catalog.get(course_id)
        if course is None:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        if not (course.is_instructor(self.user_name) or self.admin):
            raise web.HTTPError(403, f"Only the instructors of {course.title} may see or change its roster.")
        return course

    @web.authenticated
    async def get(self, course_id):
        course = self.course(course_id)
        roster = await self.core.membership.roster(course)
        self.write_json({"course": course.id, "roster": [{"user": u, "how": how} for u, how in roster.items()]})

    @web.authenticated
    async def post(self, course_id):
        course = self.course(course_id)
        users = self.json_body().get("users")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise web.HTTPError(400, 'Send {"users": ["name", ...]}.')
        try:
            added = await self.core.membership.roster_add(course, users)
        except Refusal as refusal:
            return self.refuse(refusal)
        self.write_json({"added": added}, status=201)

    @web.authenticated
    async def delete(self, course_id):
        course = self.course(course_id)
        try:
            await self.core.membership.roster_remove(course, self.get_argument("user"))
        except Refusal as refusal:
            return self.refuse(refusal)
        self.set_status(204)
        self.finish()
