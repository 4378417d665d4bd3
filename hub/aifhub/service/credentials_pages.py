"""Pages of credentials and training figures: a course's completion page (a learner's progress and credential;
for its instructors, who completed, with sign-off and revoke), a learner's declaration for the training report,
and the admins' training report.

Plain HTML forms (POST with the XSRF token, then a redirect back), like :mod:`.pages`.
"""

from tornado import web

from ..credentials import report
from ..errors import Refusal
from .credentials_api import credentials_of, progress_view, with_links
from .membership import USERNAME
from .pages import PageHandler


class CompletionPage(PageHandler):
    @web.authenticated
    async def get(self, course_id):
        course = self.course_or_404(course_id)
        credentials = credentials_of(self.settings)
        instructor = course.is_instructor(self.user_name) or self.admin
        role = await self.core.membership.role(course, self.user_name, False)
        if role is None and not instructor:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        mine, progress, learners, issued = None, None, {}, []
        if course.completion and role == "learner":
            progress = progress_view((await credentials.progress(course, [self.user_name]))[self.user_name])
            mine = next(
                (
                    with_links(c, credentials.issuer)
                    for c in await credentials.of_user(self.user_name)
                    if c["course_id"] == course.id and c["revoked_at"] is None
                ),
                None,
            )
        if instructor:
            issued = [with_links(c, credentials.issuer) for c in await credentials.of_course(course.id)]
            if course.completion:
                names = sorted(set(await self.core.membership.roster(course)) | {c["user"] for c in issued})
                learners = {u: progress_view(r) for u, r in (await credentials.progress(course, names)).items()}
        self.render_page(
            "completion.html",
            course=course,
            progress=progress,
            mine=mine,
            instructor=instructor,
            learners=learners,
            issued=issued,
        )


class CompletionAction(PageHandler):
    @web.authenticated
    async def post(self, course_id, action):
        course = self.course_or_404(course_id)
        credentials = credentials_of(self.settings)
        path = f"courses/{course.id}/completion"
        try:
            if action == "claim":
                if await self.core.membership.role(course, self.user_name, False) != "learner":
                    raise web.HTTPError(403, f"You are not a learner of {course.title}.")
                await credentials.claim(self.user_name, course.id)
                return self.back(path, ok="Your credential is issued: share its verification link or PDF.")
            self.require_instructor(course)
            if action == "sign-off":
                user = self.get_body_argument("user", "")
                if not USERNAME.match(user) or await self.core.membership.role(course, user, False) != "learner":
                    return self.back(path, error=f"{user} is not a learner of {course.title}.")
                await credentials.sign_off(course.id, user, self.user_name)
                result = (await credentials.progress(course, [user]))[user]
                if result["complete"]:
                    await credentials.issue(user, course, result["figures"])
                    return self.back(path, ok=f"Signed off {user}; their credential is issued.")
                return self.back(path, ok=f"Signed off {user}; they have not met every condition yet.")
            credential_id = self.get_body_argument("credential", "")
            reason = self.get_body_argument("reason", "")[:500]
            await credentials.revoke(course.id, credential_id, self.user_name, reason)
            return self.back(path, ok="The credential is revoked: it no longer verifies.")
        except Refusal as refusal:
            return self.back(path, error=refusal.message)


class ProfilePage(PageHandler):
    """What a learner declares for the AI Factory's training statistics: optional, visible, changeable, deletable."""

    @web.authenticated
    async def get(self):
        declared = await self.core.db.run(report.declaration, self.user_name)
        self.render_page(
            "profile.html",
            declared=declared,
            sectors=report.SECTOR_NAMES,
            genders=report.GENDER_NAMES,
        )

    @web.authenticated
    async def post(self):
        if self.get_body_argument("action", "save") == "delete":
            await self.core.db.run(report.forget, self.user_name)
            return self.back("me/profile", ok="Deleted: we keep nothing you declared.")
        try:
            fields = report.check_declaration(
                self.get_body_argument("country", ""),
                self.get_body_argument("sector", ""),
                self.get_body_argument("gender", ""),
            )
        except ValueError as exc:
            return self.back("me/profile", error=str(exc))
        await self.core.db.run(report.declare, self.user_name, *fields)
        return self.back("me/profile", ok="Saved. Thank you.")


class TrainingReportPage(PageHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        rows = report.report(await self.core.db.run(report.gather), self.core.catalog)
        fmt = self.get_argument("format", "html")
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="training-report.csv"')
            return self.finish(report.to_csv(rows))
        if fmt == "json":
            self.set_header("Content-Type", "application/json")
            return self.finish({"minimum_cell": report.MIN_CELL, "rows": rows})
        self.render_page("training.html", rows=rows, dimensions=report.DIMENSIONS, minimum=report.MIN_CELL)


def routes(route):
    return [
        (route(r"courses/([a-z0-9-]+)/completion"), CompletionPage),
        (route(r"courses/([a-z0-9-]+)/completion/(claim|sign-off|revoke)"), CompletionAction),
        (route("me/profile"), ProfilePage),
        (route("admin/training"), TrainingReportPage),
    ]
