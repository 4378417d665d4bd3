"""Credentials over HTTP: learners' and instructors' REST, and the public documents and verification page.

* ``GET api/v1/me/credentials``: the caller's credentials and their progress toward completing their courses;
  ``POST api/v1/me/credentials`` ``{"course"}``: issue the caller's credential once they completed the course.
* ``GET api/v1/courses/<id>/credentials`` (instructors, admins): who completed, who is on the way;
  ``POST api/v1/courses/<id>/credentials`` ``{"user", "sign_off"}``: sign a learner off (and issue when complete);
  ``POST api/v1/courses/<id>/credentials/<credential id>/revoke`` ``{"reason"}``.
* Public, no login (a credential is meant to be shown to anyone its holder gives the link; its id is a random
  UUID): ``credentials/<id>.json`` (the signed credential), ``credentials/<id>.pdf`` (printable, with a QR code
  to the verification page), ``credentials/status/<key>`` (the status list), ``verify/<id>`` (the verification
  page), and ``did.json`` (the issuer's DID document, when it is a did:web).
"""

import json

from tornado import web

from .. import texts
from ..credentials import pdf, report
from ..credentials.service import Credentials
from .base import APIHandler
from .membership import USERNAME

UUID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
FINGERPRINT = r"(z[1-9A-HJ-NP-Za-km-z]{40,60})"
MAX_REASON = 500


def credentials_of(settings):
    return settings["aifhub_credentials"]


def with_links(summary, issuer):
    cid = summary["id"]
    return summary | {
        "json": issuer.url(f"credentials/{cid}.json"),
        "pdf": issuer.url(f"credentials/{cid}.pdf"),
        "verify": issuer.verify_url(cid),
    }


def progress_view(result):
    return {"complete": result["complete"], "conditions": result["conditions"], "figures": result["figures"]}


class CredentialsAPI(APIHandler):
    @property
    def credentials(self) -> Credentials:
        return credentials_of(self.settings)

    def course_or_404(self, course_id):
        course = self.core.catalog.get(course_id)
        if course is None:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        return course

    def require_instructor(self, course):
        if not (course.is_instructor(self.user_name) or self.admin):
            raise web.HTTPError(403, f"Only the instructors of {course.title} may do this.")


class MyCredentialsHandler(CredentialsAPI):
    @web.authenticated
    async def get(self):
        issuer = self.credentials.issuer
        mine = [with_links(c, issuer) for c in await self.credentials.of_user(self.user_name)]
        progress = {}
        for course in self.core.catalog.courses.values():
            if not course.completion:
                continue
            if await self.core.membership.role(course, self.user_name, False) != "learner":
                continue
            result = (await self.credentials.progress(course, [self.user_name]))[self.user_name]
            progress[course.id] = progress_view(result)
        self.write_json({"credentials": mine, "progress": progress})

    @web.authenticated
    async def post(self):
        (course_id,) = self.text_arguments(self.json_body(), "course")
        course = self.course_or_404(course_id)
        if await self.core.membership.role(course, self.user_name, False) != "learner":
            raise web.HTTPError(403, f"You are not a learner of {course.title}.")
        summary = await self.credentials.claim(self.user_name, course.id)
        self.write_json(with_links(summary, self.credentials.issuer), status=201)


class CourseCredentialsHandler(CredentialsAPI):
    async def learners(self, course):
        names = set(await self.core.membership.roster(course))
        names |= {c["user"] for c in await self.credentials.of_course(course.id)}
        return sorted(names)

    @web.authenticated
    async def get(self, course_id):
        course = self.course_or_404(course_id)
        self.require_instructor(course)
        issued = [with_links(c, self.credentials.issuer) for c in await self.credentials.of_course(course.id)]
        progress = {}
        if course.completion:
            results = await self.credentials.progress(course, await self.learners(course))
            progress = {user: progress_view(r) for user, r in results.items()}
        self.write_json(
            {"course": course.id, "completion": course.completion, "credentials": issued, "progress": progress}
        )

    @web.authenticated
    async def post(self, course_id):
        course = self.course_or_404(course_id)
        self.require_instructor(course)
        body = self.json_body()
        (user,) = self.text_arguments(body, "user")
        if not USERNAME.match(user or ""):
            raise web.HTTPError(400, f"Expected a user name in 'user', got {texts.shown(user)}.")
        if not isinstance(body.get("sign_off", True), bool):
            raise web.HTTPError(400, "The field 'sign_off' must be true or false.")
        if await self.core.membership.role(course, user, False) != "learner":
            raise web.HTTPError(404, f"{user} is not a learner of {course.title}.")
        signed_by = (
            await self.credentials.sign_off(course.id, user, self.user_name) if body.get("sign_off", True) else None
        )
        result = (await self.credentials.progress(course, [user]))[user]
        issued = None
        if course.completion and result["complete"]:
            issued = with_links(await self.credentials.issue(user, course, result["figures"]), self.credentials.issuer)
        self.write_json(
            {"user": user, "signed_off_by": signed_by, "progress": progress_view(result), "credential": issued}
        )


class RevokeHandler(CredentialsAPI):
    @web.authenticated
    async def post(self, course_id, credential_id):
        course = self.course_or_404(course_id)
        self.require_instructor(course)
        (reason,) = self.text_arguments(self.json_body(), "reason")
        if len(reason) > MAX_REASON:
            raise web.HTTPError(400, f"A reason has at most {MAX_REASON} characters.")
        summary = await self.credentials.revoke(course.id, credential_id, self.user_name, reason)
        self.write_json(with_links(summary, self.credentials.issuer))


class TrainingReportHandler(CredentialsAPI):
    """``GET api/v1/training/report?format=json|csv`` (admins): the training report, small cells suppressed."""

    @web.authenticated
    async def get(self):
        self.require_admin()
        fmt = self.get_argument("format", "json")
        if fmt not in ("json", "csv"):
            raise web.HTTPError(400, "format is json or csv.")
        rows = report.report(await self.core.db.run(report.gather), self.core.catalog)
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            return self.finish(report.to_csv(rows))
        self.write_json({"minimum_cell": report.MIN_CELL, "rows": rows})


# -- public: no login ---------------------------------------------------------


class PublicHandler(web.RequestHandler):
    """Documents anyone may fetch; errors as ``{status, message}``."""

    @property
    def credentials(self) -> Credentials:
        return credentials_of(self.settings)

    def set_default_headers(self):
        self.set_header("Access-Control-Allow-Origin", "*")  # verifiers run in other sites' pages
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": texts.message(message)}))

    def write_document(self, document):
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache")
        self.finish(json.dumps(document, ensure_ascii=False, indent=1))

    async def record(self, credential_id):
        record = await self.credentials.get(credential_id)
        if record is None:
            raise web.HTTPError(404, "There is no such credential.")
        return record


class CredentialDocument(PublicHandler):
    async def get(self, credential_id):
        self.write_document((await self.record(credential_id))["document"])


class CredentialPDF(PublicHandler):
    async def get(self, credential_id):
        record = await self.record(credential_id)
        data = pdf.render(
            record["document"], self.credentials.issuer.verify_url(credential_id), revoked=bool(record["revoked_at"])
        )
        self.set_header("Content-Type", "application/pdf")
        self.set_header("Content-Disposition", f'inline; filename="credential-{credential_id}.pdf"')
        self.finish(data)


class StatusListDocument(PublicHandler):
    async def get(self, fingerprint):
        document = await self.credentials.status_list(fingerprint)
        if document is None:
            raise web.HTTPError(404, "There is no such status list.")
        self.write_document(document)


class DIDDocument(PublicHandler):
    def get(self):
        issuer = self.credentials.issuer
        if not issuer.did_web:
            raise web.HTTPError(404, "This issuer uses did:key identifiers: every key is its own DID.")
        self.write_document(issuer.did_document())


class VerifyPage(PublicHandler):
    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_status(status_code)
        self.render("verify.html", record=None, result=None, message=message, links={}, status=status_code)

    async def get(self, credential_id):
        record, result = await self.credentials.verify(credential_id)
        if record is None:
            raise web.HTTPError(404, "There is no such credential: check the link you were given.")
        issuer = self.credentials.issuer
        self.render(
            "verify.html",
            record=record,
            result=result,
            message="",
            status=200,
            links=with_links({"id": credential_id}, issuer),
        )


def routes(route):
    return [
        (route("api/v1/me/credentials"), MyCredentialsHandler),
        (route(r"api/v1/courses/([a-z0-9-]+)/credentials"), CourseCredentialsHandler),
        (route("api/v1/training/report"), TrainingReportHandler),
        (route(rf"api/v1/courses/([a-z0-9-]+)/credentials/{UUID}/revoke"), RevokeHandler),
        (route(rf"credentials/{UUID}\.json"), CredentialDocument),
        (route(rf"credentials/{UUID}\.pdf"), CredentialPDF),
        (route(rf"credentials/status/{FINGERPRINT}"), StatusListDocument),
        (route(rf"verify/{UUID}"), VerifyPage),
        (route("did.json"), DIDDocument),
    ]
