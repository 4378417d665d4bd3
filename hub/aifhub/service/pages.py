"""HTML pages: learner home, course page (the instructor's view for its instructors), admin page.

Every action is a plain HTML form (POST with the XSRF token, then a redirect back), so the
pages work with a keyboard and without JavaScript; HubOAuth refuses cookie-authenticated
POSTs without a valid token. What an action says (done, or why not) travels to the next page
in a signed, short-lived cookie that the service alone can write: a link cannot plant a message
on a page (a query string such as ``?error=...`` is never shown).
"""

import csv
import io
import json

from tornado import web

from ..credentials import report as training_report
from ..auth.people import names_of
from ..errors import Refusal
from ..ledger import allocations, reports
from . import charts, grading_view
from .base import BaseHandler
from ..classroom.pages import on_course_page


FLASH_COOKIE = "aifhub-flash"
FLASH_MAX_AGE_DAYS = 10 / (24 * 60)  # ten minutes: the redirect after an action, not a later visit


class PageHandler(BaseHandler):
    def get_template_namespace(self):
        # one rule for figures and moments on every page and every included template
        return super().get_template_namespace() | {"hours": charts.hours, "when": charts.when}

    def render_page(self, template, **ns):
        self.render(
            template,
            user=self.current_user,
            admin=self.admin,
            hub_prefix=self.settings["hub_prefix"],
            prefix=self.settings["service_prefix"],
            isolated=self.settings["aifhub_isolated"],
            **self.take_flash(),
            **ns,
        )

    def take_flash(self):
        """The message the last action left (signed by this service, minutes old at most), read once."""
        raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=FLASH_MAX_AGE_DAYS)
        if self.get_cookie(FLASH_COOKIE) is not None:
            self.clear_cookie(FLASH_COOKIE, path=self.settings["service_prefix"])
        try:
            flash = json.loads(raw) if raw else {}
        except ValueError:
            flash = {}
        if not isinstance(flash, dict):
            flash = {}
        return {"flash_ok": str(flash.get("ok", "")), "flash_error": str(flash.get("error", ""))}

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        try:
            self.render(
                "error.html",
                status=status_code,
                message=message,
                hub_prefix=self.settings["hub_prefix"],
                prefix=self.settings["service_prefix"],
            )
        except Exception:  # noqa: BLE001 - never fail while reporting a failure
            self.finish(f"{status_code}: {message}")

    def back(self, path, ok="", error=""):
        """Redirect to ``path`` (under the service), which then shows ``ok`` or ``error`` once."""
        flash = {k: v for k, v in (("ok", ok), ("error", error)) if v}
        if flash:
            self.set_signed_cookie(
                FLASH_COOKIE,
                json.dumps(flash),
                expires_days=None,  # a session cookie, read by the next page
                path=self.settings["service_prefix"],
                httponly=True,
                samesite="Lax",
                secure=self.request.protocol == "https",
            )
        self.redirect(self.settings["service_prefix"] + path)

    @property
    def grading(self):
        return self.settings["aifhub_grading"]

    def course_or_404(self, course_id):
        course = self.core.catalog.get(course_id)
        if course is None:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        return course

    def require_instructor(self, course):
        if not (course.is_instructor(self.user_name) or self.admin):
            raise web.HTTPError(403, f"Only the instructors of {course.title} may see or change this.")


class HomePage(PageHandler):
    @web.authenticated
    async def get(self):
        instructs = [c for c in self.core.catalog.courses.values() if c.is_instructor(self.user_name)]
        broken = self.core.broken_courses() if (self.admin or instructs) else {}
        view = await self.core.learner_view(self.user_name, self.admin, stopped_limit=1)
        offers = view["courses"]
        for offer in offers:
            course = self.core.catalog.get(offer["id"])
            offer["assignments_status"] = (
                await grading_view.learner_assignments(self.grading, course, self.user_name)
                if offer["enrolled"] and course is not None
                else []
            )
        self.render_page(
            "home.html",
            offers=offers,
            broken=broken,
            running=view["running"],
            gpu_now=view["gpu"],
            notice=view["notice"],
            stopped=view["stopped"],
            ask_profile=await self.core.db.run(training_report.declaration, self.user_name) is None,
        )


class EnrolAction(PageHandler):
    @web.authenticated
    async def post(self, course_id):
        try:
            course = await self.core.membership.enrol(course_id, self.user_name, self.get_body_argument("code", None))
        except Refusal as refusal:
            return self.back("", error=refusal.message)
        self.back("", ok=f"You are enrolled in {course.title}.")


class StopAction(PageHandler):
    @web.authenticated
    async def post(self, course_id):
        try:
            await self.core.metering.stop_own(self.user_name, course_id)
        except Refusal as refusal:
            return self.back("", error=refusal.message)
        self.back("", ok="Your sandbox is stopping; your work folder is kept.")


class LeaveWaitlistAction(PageHandler):
    @web.authenticated
    async def post(self, course_id):
        line = self.core.waitlist
        if line is None or not await line.leave(self.user_name, course_id=course_id):
            return self.back("", error="You are not waiting for a GPU of that course.")
        course = self.core.catalog.get(course_id)
        self.back("", ok=f"You left the GPU waitlist of {course.title if course else course_id}.")


async def waitlist_entries(core, course_id=None):
    """Who waits for a GPU (of ``course_id``, or all), held offers first, then in order."""
    if core.waitlist is None:
        return []
    entries = [e for e in (await core.waitlist.status()).values() if course_id is None or e["course"] == course_id]
    return sorted(entries, key=lambda e: (e["state"] != "offered", e["gpu_kind"], e["position"], e["id"]))


class CoursePage(PageHandler):
    async def instructor_view(self, course):
        usage = await self.core.db.run(reports.per_learner, course.id)
        roster = await self.core.membership.roster(course)
        lti = self.settings.get("aifhub_lti")
        if lti is not None:
            from ..lti.handlers import course_state  # builds on this module's PageHandler
        return {
            "lti": await course_state(lti, self.core, course.id) if lti is not None else None,
            "roster": roster,
            "people": await self.core.db.run(names_of, set(roster) | set(usage)),  # who the opaque names are
            "usage": usage,
            "gpu_now": self.core.metering.gpu_use.for_course(course.id) if self.core.metering.gpu_use else {},
            "waitlist": await waitlist_entries(self.core, course.id),
            "grading": await grading_view.instructor_grading(self.grading, course),
            "usage_chart": charts.bars(
                [(u, v["gpu_hours"] or v["cpu_hours"]) for u, v in sorted(usage.items())],
                f"Usage per learner in {course.title} (hours)",
                element_id="usage-chart",
            ),
        }

    @web.authenticated
    async def get(self, course_id):
        course = self.course_or_404(course_id)
        decision = await self.core.membership.access(course, self.user_name, self.admin)
        instructor = course.is_instructor(self.user_name) or self.admin
        if not decision.allowed and decision.reason == "not-enrolled" and course.enrollment == "roster":
            # what the spawn form's refusal says too: the course exists, and who to ask
            raise web.HTTPError(403, decision.message)
        self.render_page(
            "course.html",
            course=course,
            decision=decision,
            instructor=instructor,
            quota=await self.core.admission.quotas(course, self.user_name) if decision.allowed else [],
            running=course.id in await self.core.metering.running_courses(self.user_name),
            my_assignments=await grading_view.learner_assignments(self.grading, course, self.user_name)
            if decision.allowed
            else [],
            **(await self.instructor_view(course) if instructor else {}),
            classroom=await on_course_page(self.settings["aifhub_classroom"], course, self.user_name, instructor),
        )


class InstructorPage(CoursePage):
    @web.authenticated
    async def get(self, course_id):
        course = self.course_or_404(course_id)
        self.require_instructor(course)
        await super().get(course_id)


class RosterAction(PageHandler):
    @web.authenticated
    async def post(self, course_id, action):
        course = self.course_or_404(course_id)
        self.require_instructor(course)
        path = f"courses/{course.id}"
        try:
            if action == "add":
                added = await self.core.membership.roster_add(course, [self.get_body_argument("user", "")])
                return self.back(path, ok=f"Added {', '.join(added) or 'nobody new'}.")
            if action == "remove":
                await self.core.membership.roster_remove(course, self.get_body_argument("user", ""))
                return self.back(path, ok="Removed.")
            text = self.get_body_argument("csv", "")
            upload = self.request.files.get("file")
            if upload:
                text = upload[0]["body"].decode("utf-8", errors="replace")
            names = [
                row[0]
                for row in csv.reader(io.StringIO(text))
                if row and row[0].strip() and row[0].strip().lower() not in ("user", "username", "name")
            ]
            added = await self.core.membership.roster_add(course, names)
            return self.back(path, ok=f"Imported {len(added)} learner(s).")
        except Refusal as refusal:
            return self.back(path, error=refusal.message)


class AssignmentAction(PageHandler):
    """Release, collect, autograde, release feedback: the instructor's buttons."""

    @web.authenticated
    async def post(self, course_id, assignment, action):
        course = self.course_or_404(course_id)
        self.require_instructor(course)
        if assignment not in course.assignments:
            return self.back(f"courses/{course.id}", error=f"{course.title} has no assignment '{assignment}'.")
        try:
            if action == "release":
                await self.grading.release(course.id, assignment)
                message = f"Released {assignment}: learners can fetch it now."
            elif action == "collect":
                result = await self.grading.collect(course.id, assignment)
                message = f"Collected {assignment}: {len(result['collected'])} submission(s)."
            elif action == "autograde":
                result = await self.grading.autograde(course.id, assignment, requested_by=self.user_name)
                message = f"Queued {len(result['jobs'])} submission(s) of {assignment} for grading."
            else:
                result = await self.grading.release_feedback(course.id, assignment)
                message = f"Released feedback on {assignment} to {len(result['released_to'])} learner(s)."
        except Refusal as exc:
            return self.back(f"courses/{course.id}", error=exc.message)
        self.back(f"courses/{course.id}", ok=message)


class FeedbackPage(PageHandler):
    """A learner's own released feedback, as nbgrader rendered it (scripts disabled)."""

    @web.authenticated
    async def get(self, course_id, assignment, notebook):
        course = self.course_or_404(course_id)
        try:
            html = await self.grading.feedback_html(course.id, assignment, self.user_name, notebook)
        except (Refusal, ValueError):  # an odd assignment or notebook name: nothing of the learner's
            html = None
        if html is None:
            raise web.HTTPError(404, f"No feedback on {assignment} / {notebook} has been released to you.")
        self.set_header(
            "Content-Security-Policy", "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(html)


def _admin_overview(s, catalog):
    """Allocations with their burn-down charts, and the pool's daily use, read in one transaction."""
    allocs = allocations.list_all(s)
    for a in allocs:
        cumulative, points = 0.0, [((a["start"] or a["created"])[:10], 0.0)]
        for day, hours in reports.daily_gpu_hours(s, allocation=a["id"]):
            cumulative += hours
            points.append((day, cumulative))
        a["chart"] = charts.burndown(
            points,
            a["granted_gpu_hours"],
            f"GPU-hours remaining on {a['id']}, by day",
            element_id=f"burndown-{a['id']}",
        )
        a["courses"] = sorted(c.id for c in catalog.courses.values() if c.allocation == a["id"])
    pool_chart = charts.bars(
        reports.daily_gpu_hours(s)[-14:], "GPU-hours used per day, last 14 days", element_id="pool-usage"
    )
    return allocs, pool_chart


def _allocation_action(s, action, allocation_id, form):
    if action == "create":
        a = allocations.create(
            s,
            form["id"],
            form["gpu_hours"],
            form["start"],
            form["end"],
            title=form["title"],
            access_call=form["access_call"],
            owner=form["owner"],
        )
        return f"Created {a.id}."
    if action == "topup":
        a = allocations.topup(s, allocation_id, form["gpu_hours"], form["note"])
        return f"Topped up {a.id}."
    a = allocations.close(s, allocation_id, form["note"])
    return f"Closed {a.id}."


class AdminPage(PageHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        allocs, pool_chart = await self.core.db.run(_admin_overview, self.core.catalog)
        self.render_page(
            "admin.html",
            pool=await self.core.admission.pool_status(),
            broken=self.core.broken_courses(),
            waitlist=await waitlist_entries(self.core),
            courses=sorted(self.core.catalog.courses.values(), key=lambda c: c.id),
            allocations=allocs,
            pool_chart=pool_chart,
        )


class AllocationAction(PageHandler):
    @web.authenticated
    async def post(self, allocation_id=None, action="create"):
        self.require_admin()
        arg = self.get_body_argument
        form = {
            "id": arg("id", ""),
            "gpu_hours": arg("gpu_hours", ""),
            "start": arg("start", None),
            "end": arg("end", None),
            "title": arg("title", ""),
            "access_call": arg("access_call", ""),
            "owner": arg("owner", ""),
            "note": arg("note", ""),
        }
        try:
            message = await self.core.db.run(_allocation_action, action, allocation_id, form)
        except Refusal as refusal:
            return self.back("admin", error=refusal.message)
        self.core.ledger_changed()
        self.back("admin", ok=message)
