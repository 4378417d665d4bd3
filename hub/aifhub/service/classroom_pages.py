"""The live workshop's page of a course (``courses/<id>/help``): for learners, their raised hand, the helper's
request to look inside and their accept or end, and the announcements; for instructors and helpers, the queue of
raised hands (oldest first, live), and for instructors the announcement and push forms and the audit log.

Plain HTML forms (POST with the XSRF token, then back to the page), so it all works with the keyboard alone and
without JavaScript; a small script only keeps the queue live (server-sent events) and says new hands aloud
(an ``aria-live`` region).
"""

from tornado import web

from ..errors import Refusal
from .pages import PageHandler

COURSE = r"([a-z0-9-]+)"


class HelpPage(PageHandler):
    @property
    def room(self):
        return self.settings["aifhub_classroom"]

    @web.authenticated
    async def get(self, course_id):
        course = self.course_or_404(course_id)
        staff = self.admin or course.is_staff(self.user_name)
        instructor = self.admin or course.is_instructor(self.user_name)
        role = await self.core.membership.role(course, self.user_name, self.admin)
        if role is None and not staff:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        self.render_page(
            "classroom.html",
            course=course,
            staff=staff,
            instructor=instructor,
            learner=role == "learner",
            hand=(await self.room.my_hands(self.user_name)).get(course.id),
            hands=await self.room.queue_view(course.id) if staff else [],
            announcements=(await self.room.announcements_for([course.id])).get(course.id, []),
            audit=await self.room.audit(course.id, self.user_name, self.admin),
            can_push=instructor and self.room.work_root is not None,
            attendance=(await self.room.attendance(course.id, self.user_name, self.admin))[1] if instructor else [],
        )


class HelpAction(PageHandler):
    """The page's forms: a learner's raise, lower, accept, end, reset; staff's take and ask; instructors'
    announcement and push."""

    @web.authenticated
    async def post(self, course_id, action, hand_id=None):
        course = self.course_or_404(course_id)
        room, user = self.settings["aifhub_classroom"], self.user_name
        page = f"courses/{course.id}/help"
        try:
            if action == "raise":
                await room.raise_hand(course.id, user, self.get_body_argument("question", ""))
                ok = "Your hand is raised; a helper will come."
            elif action == "lower":
                await room.lower(course.id, user)
                ok = "Your hand is lowered."
            elif action == "accept":
                await room.accept(course.id, user)
                ok = "The helper may now look inside your sandbox. End it at any moment."
            elif action == "end":
                await room.end(course.id, user)
                ok = "The helper's access has ended."
            elif action == "reset":
                done = await room.reset_material(course.id, user, self.get_body_argument("path", ""))
                ok = f"{done['path']} is the course's version again" + (
                    f"; yours is kept as {done['backup']}." if done["backup"] else "."
                )
            elif action in ("take", "ask"):
                step = room.take if action == "take" else room.ask
                view = await step(course.id, int(hand_id), user, self.admin)
                ok = (
                    f"You took {view['user']}'s hand."
                    if action == "take"
                    else f"You asked {view['user']} to let you in."
                )
            elif action == "announce":
                session = self.get_body_argument("session", "")
                await room.announce(
                    course.id, user, self.admin, self.get_body_argument("text", ""), int(session) if session else None
                )
                ok = "Announcement posted."
            else:  # push
                upload = (self.request.files.get("file") or [None])[0]
                if upload is not None:
                    name, data = upload["filename"].rsplit("/", 1)[-1], upload["body"]
                else:
                    source = self.get_body_argument("from", "")
                    data = await room.read_course_file(course.id, user, self.admin, source)
                    name = source.rsplit("/", 1)[-1]
                result = await room.push_material(course.id, user, self.admin, name, data, "")
                got = sum(1 for v in result["learners"].values() if v == "added" or v.startswith("beside:"))
                ok = f"{name} pushed to {got} learner(s)' folders (never over their own files)."
        except Refusal as exc:
            self.back(page, error=exc.message)
            return
        except (ValueError, web.MissingArgumentError):
            self.back(page, error="That form was not filled in as expected.")
            return
        self.back(page, ok=ok)


def routes(route):
    return [
        (route(rf"courses/{COURSE}/help"), HelpPage),
        (route(rf"courses/{COURSE}/help/(raise|lower|accept|end|reset|announce|push)"), HelpAction),
        (route(rf"courses/{COURSE}/help/hands/([0-9]{{1,12}})/(take|ask)"), _HandAction),
    ]


class _HandAction(HelpAction):
    @web.authenticated
    async def post(self, course_id, hand_id, action):
        await super().post(course_id, action, hand_id)
