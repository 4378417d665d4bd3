"""HTML pages: learner home, course page, admin page."""

from tornado import web

from .base import BaseHandler


class PageHandler(BaseHandler):
    def render_page(self, template, **ns):
        self.render(
            template,
            user=self.current_user,
            admin=self.admin,
            hub_prefix=self.settings["hub_prefix"],
            prefix=self.settings["service_prefix"],
            isolated=self.settings["aifhub_isolated"],
            **ns,
        )


class HomePage(PageHandler):
    @web.authenticated
    def get(self):
        instructs = [c for c in self.core.catalog.courses.values() if c.is_instructor(self.user_name)]
        broken = self.core.broken_courses() if (self.admin or instructs) else {}
        self.render_page("home.html", offers=self.core.offers(self.user_name, self.admin), broken=broken)


class CoursePage(PageHandler):
    @web.authenticated
    def get(self, course_id):
        course = self.core.catalog.get(course_id)
        if course is None:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        decision = self.core.access(course, self.user_name, self.admin)
        if not decision.allowed and course.enrollment == "roster":
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        self.render_page("course.html", course=course, decision=decision,
                         instructor=course.is_instructor(self.user_name) or self.admin)


class AdminPage(PageHandler):
    @web.authenticated
    def get(self):
        self.require_admin()
        self.render_page("admin.html", pool=self.core.pool_status(), broken=self.core.broken_courses(),
                         courses=sorted(self.core.catalog.courses.values(), key=lambda c: c.id))
