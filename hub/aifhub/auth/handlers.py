"""The service's endpoint for the hub's authenticators: ``POST api/v1/internal/login``."""

from ..service.base import InternalHandler
from ..service.membership import USERNAME
from .claims import COURSE_ID
from .grants import SOURCES, record_login
from .people import profile_of


class LoginHandler(InternalHandler):
    """Body ``{user, source, grants: {courses: {course: role}}, profile: {name, email}}`` (OIDC) or
    ``{user, source: lti, launch}`` (the launch's name and email claims are the profile)."""

    async def post(self):
        body = self.json_body()
        user, source = body.get("user"), body.get("source")
        if not isinstance(user, str) or not USERNAME.match(user):
            return self.write_json({"status": 400, "message": f"Not a valid user name: {user!r}"}, status=400)
        if source not in SOURCES:
            return self.write_json(
                {"status": 400, "message": f"source must be one of {', '.join(SOURCES)}"}, status=400
            )
        if source == "lti":
            lti = self.settings.get("aifhub_lti")
            if lti is None:
                return self.write_json({"status": 409, "message": "This hub takes no LTI launches."}, status=409)
            refusal, courses, launch = await lti.record_launch(user, body.get("launch") or {})
            if refusal:
                return self.write_json({"status": 403, "message": refusal}, status=403)
            answer = await record_login(
                self.core, user, source, courses, scope=set(courses), profile=profile_of(body.get("launch"))
            )
            answer["launch"] = launch
            return self.write_json(answer)
        courses = (body.get("grants") or {}).get("courses") or {}
        bad = [
            c
            for c, role in courses.items()
            if not (isinstance(c, str) and COURSE_ID.match(c)) or role not in ("learner", "instructor")
        ]
        if bad:
            return self.write_json({"status": 400, "message": f"Not valid course grants: {bad[:5]}"}, status=400)
        profile = body.get("profile") if isinstance(body.get("profile"), dict) else None
        self.write_json(await record_login(self.core, user, source, courses, profile=profile))


def routes(route):
    return [(route("api/v1/internal/login"), LoginHandler)]
