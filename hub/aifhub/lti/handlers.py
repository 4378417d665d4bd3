"""The service's LTI pages and API: the tool's JWKS (public), and for a course's instructors the state
of its LMS links and grade passback, a resend of failed scores and a roster sync."""

import json

from tornado import web

from ..service.base import APIHandler
from ..service.pages import PageHandler


class JWKSHandler(web.RequestHandler):
    """The tool's public key set, for the platform to verify the tool's signed requests."""

    def get(self):
        lti = self.settings.get("aifhub_lti")
        if lti is None:
            raise web.HTTPError(404, "This hub takes no LTI launches.")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(lti.keys.jwks()))


def _links(s, course_id):
    from .models import LtiLink

    return [link.to_dict() for link in s.query(LtiLink).filter(LtiLink.course_id == course_id)]


async def course_state(lti, core, course_id):
    links = await core.db.run(_links, course_id)
    scores = await lti.passback.status(course_id)
    counts = {state: sum(1 for x in scores if x["state"] == state) for state in ("pending", "sent", "failed")}
    return {"course_id": course_id, "links": links, "scores": scores, "counts": counts}


class CourseLtiAPI(APIHandler):
    """GET: links and passback of a course; POST .../resend (``{"ids": [...]}`` or all failed), .../roster-sync."""

    def _course(self, course_id):
        lti = self.settings.get("aifhub_lti")
        course = self.core.catalog.get(course_id)
        if course is None or not (course.is_instructor(self.user_name) or self.admin):
            raise web.HTTPError(403, f"Only the instructors of '{course_id}' may see its LMS links.")
        if lti is None:
            raise web.HTTPError(404, "This hub takes no LTI launches.")
        return lti, course

    @web.authenticated
    async def get(self, course_id, action=None):
        lti, course = self._course(course_id)
        self.write_json(await course_state(lti, self.core, course.id))

    @web.authenticated
    async def post(self, course_id, action=None):
        lti, course = self._course(course_id)
        if action == "resend":
            ids = self.json_body().get("ids")
            if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
                raise web.HTTPError(400, "ids must be a list of score ids (integers).")
            return self.write_json({"resent": await lti.passback.resend(course.id, ids)})
        if action == "roster-sync":
            state = await course_state(lti, self.core, course.id)
            results = [await lti.sync_roster(link["id"]) for link in state["links"] if link["nrps"]]
            return self.write_json({"synced": results})
        raise web.HTTPError(404, "Unknown action.")


class ResendAction(PageHandler):
    """The course page's "Resend failed scores" button."""

    @web.authenticated
    async def post(self, course_id):
        course = self.course_or_404(course_id)
        self.require_instructor(course)
        lti = self.settings.get("aifhub_lti")
        count = await lti.passback.resend(course.id) if lti else 0
        self.back(f"courses/{course.id}", ok=f"Resending {count} score(s) to the LMS.")


def routes(route):
    return [
        (route("lti/jwks"), JWKSHandler),
        (route(r"api/v1/courses/([a-z0-9-]+)/lti"), CourseLtiAPI),
        (route(r"api/v1/courses/([a-z0-9-]+)/lti/(resend|roster-sync)"), CourseLtiAPI),
        (route(r"courses/([a-z0-9-]+)/lti/resend"), ResendAction),
    ]
