"""The JSON API at ``/services/aifhub/api/v1/`` for people and scripts (JupyterHub tokens)."""

from tornado import web

from ..auth.people import names_of
from ..errors import Refusal
from .base import APIHandler


class MeHandler(APIHandler):
    @web.authenticated
    async def get(self):
        view = await self.core.learner_view(self.user_name, self.admin)
        room = self.settings["aifhub_classroom"]
        self.write_json(
            {
                "name": self.user_name,
                "admin": self.admin,
                "courses": view["courses"],
                "notice": view["notice"],
                "stopped": view["stopped"],
                # the instructors' announcements of the caller's courses (newest first), and their raised hands
                "announcements": await room.announcements_for([c["id"] for c in view["courses"]]),
                "hands": await room.my_hands(self.user_name),
                "gpu": view["gpu"],  # {course: utilisation and memory of the learner's running GPU sandbox}
            }
        )


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
        self.write_json(
            {
                "changed": changed,
                "courses": sorted(self.core.catalog.courses),
                "broken": self.core.broken_courses(),
            }
        )


class PoolHandler(APIHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        warm = self.core.admission.warm
        self.write_json(await self.core.admission.pool_status() | {"warm": warm.status() if warm else []})


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
        people = await self.core.db.run(names_of, list(roster))  # who the (often opaque) user names are
        entries = [{"user": u, "how": how} | (people.get(u) or {"name": "", "email": ""}) for u, how in roster.items()]
        self.write_json({"course": course.id, "roster": entries})

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


class MyWaitlistHandler(APIHandler):
    """``DELETE /api/v1/me/waitlist/<course>``: the caller leaves the GPU waitlist of a course."""

    @web.authenticated
    async def delete(self, course_id):
        line = self.core.waitlist
        if line is None or not await line.leave(self.user_name, course_id=course_id):
            raise web.HTTPError(404, f"You are not waiting for a GPU of '{course_id}'.")
        self.set_status(204)
        self.finish()


class WaitlistHandler(APIHandler):
    """``GET /api/v1/waitlist[?course=ID]``: who waits for a GPU, in order; admins see every course, instructors
    their own."""

    @web.authenticated
    async def get(self):
        course_id = self.get_argument("course", None)
        courses = self.core.catalog.courses
        if course_id is not None and course_id not in courses:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        allowed = set(courses) if self.admin else {c.id for c in courses.values() if c.is_instructor(self.user_name)}
        if course_id is not None and course_id not in allowed:
            raise web.HTTPError(403, f"Only the instructors of {courses[course_id].title} may see its waitlist.")
        if not allowed:
            raise web.HTTPError(403, "Only administrators and instructors may see the waitlist.")
        wanted = {course_id} if course_id else allowed
        entries = [] if self.core.waitlist is None else list((await self.core.waitlist.status()).values())
        entries = sorted(
            (e for e in entries if e["course"] in wanted),
            key=lambda e: (e["state"] != "offered", e["position"], e["id"]),
        )
        self.write_json({"waitlist": entries})
