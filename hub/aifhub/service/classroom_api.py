"""REST of the live workshop under ``/services/aifhub/api/v1/`` (the classroom: :mod:`aifhub.classroom`).

Learners: ``POST me/hands`` ``{"course", "question"}`` raises a hand, ``GET me/hands`` lists theirs,
``DELETE me/hands/<course>`` lowers it, ``POST me/hands/<course>/accept`` lets the helper who asked into their
sandbox, ``POST me/hands/<course>/end`` ends that (or declines the request).
Instructors and helpers of the course: ``GET courses/<id>/hands`` (JSON, or a live stream with
``Accept: text/event-stream``; ``courses/<id>/hands/stream`` is the same stream), ``POST
courses/<id>/hands/<hand id>/take`` and ``.../ask``. ``GET courses/<id>/audit`` (instructors and admins: all;
learners: their own). ``POST courses/<id>/announcements`` ``{"text", "session"?}`` (instructors), ``GET`` lists.
"""

import asyncio
import json

from tornado import web
from tornado.iostream import StreamClosedError

from ..classroom import attendance
from .base import APIHandler

COURSE = r"([a-z0-9-]+)"
STREAM_KEEPALIVE_S = 15


def classroom(handler):
    return handler.settings["aifhub_classroom"]


class MyHandsHandler(APIHandler):
    @web.authenticated
    async def get(self):
        self.write_json({"hands": await classroom(self).my_hands(self.user_name)})

    @web.authenticated
    async def post(self):
        body = self.json_body()
        course_id, question = self.text_arguments(body, "course", "question")
        if not course_id:
            raise web.HTTPError(400, 'Say which course: {"course": "<course id>", "question": "..."}.')
        hand = await classroom(self).raise_hand(course_id, self.user_name, question)
        self.write_json(hand, status=201)


class MyHandHandler(APIHandler):
    @web.authenticated
    async def delete(self, course_id):
        self.write_json(await classroom(self).lower(course_id, self.user_name))


class MyHandStepHandler(APIHandler):
    @web.authenticated
    async def post(self, course_id, step):
        room = classroom(self)
        if step == "accept":
            self.write_json(await room.accept(course_id, self.user_name))
        else:
            self.write_json(await room.end(course_id, self.user_name))


class CourseHandsHandler(APIHandler):
    """The queue: JSON, or server-sent events (one ``hands`` event per change, oldest hand first)."""

    @web.authenticated
    async def get(self, course_id, stream=None):
        room = classroom(self)
        hands = await room.queue(course_id, self.user_name, self.admin)  # refuses those who may not see it
        if not stream and "text/event-stream" not in self.request.headers.get("Accept", ""):
            self.write_json({"course": course_id, "hands": hands})
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        version = room.board.versions.get(course_id, 0)
        try:
            while True:
                self.write(f"event: hands\ndata: {json.dumps({'course': course_id, 'hands': hands})}\n\n")
                await self.flush()
                new = await room.board.wait(course_id, version, STREAM_KEEPALIVE_S)
                if new == version:
                    self.write(": keep-alive\n\n")
                    await self.flush()
                version = new
                hands = await room.queue_view(course_id)
        except (StreamClosedError, asyncio.CancelledError):
            return

    def on_connection_close(self):
        pass


class HandStepHandler(APIHandler):
    @web.authenticated
    async def post(self, course_id, hand_id, step):
        room = classroom(self)
        do = room.take if step == "take" else room.ask
        self.write_json(await do(course_id, int(hand_id), self.user_name, self.admin))


class AuditHandler(APIHandler):
    @web.authenticated
    async def get(self, course_id):
        entries = await classroom(self).audit(course_id, self.user_name, self.admin)
        self.write_json({"course": course_id, "audit": entries})


class AnnouncementsHandler(APIHandler):
    @web.authenticated
    async def get(self, course_id):
        room = classroom(self)
        course = room.course(course_id)
        if not (self.admin or course.is_staff(self.user_name)):
            if await self.core.membership.role(course, self.user_name, False) is None:
                raise web.HTTPError(403, f"You are not in {course.title}.")
        shown = await room.announcements_for([course_id])
        self.write_json({"course": course_id, "announcements": shown.get(course_id, [])})

    @web.authenticated
    async def post(self, course_id):
        body = self.json_body()
        (text,) = self.text_arguments(body, "text")
        a = await classroom(self).announce(course_id, self.user_name, self.admin, text, body.get("session"))
        self.write_json(a, status=201)


class PushHandler(APIHandler):
    """``POST courses/<id>/materials/push`` ``{"name", "content"}`` or ``{"from": "<file of the course folder>",
    "name"?}``: the file into every learner's work folder, never over theirs."""

    @web.authenticated
    async def post(self, course_id):
        room = classroom(self)
        body = self.json_body()
        name, content, source = self.text_arguments(body, "name", "content", "from")
        if source:
            data = await room.read_course_file(course_id, self.user_name, self.admin, source)
            name = name or source.rsplit("/", 1)[-1]
        elif "content" in body:
            data = content.encode()
        else:
            raise web.HTTPError(400, 'Send {"name", "content"} or {"from": "<file of the course folder>"}.')
        self.write_json(await room.push_material(course_id, self.user_name, self.admin, name, data, source), 201)


class ResetHandler(APIHandler):
    """``POST me/materials/<course>/reset`` ``{"path"}``: the learner's file back to the course's version."""

    @web.authenticated
    async def post(self, course_id):
        (path,) = self.text_arguments(self.json_body(), "path")
        self.write_json(await classroom(self).reset_material(course_id, self.user_name, path))


class AttendanceHandler(APIHandler):
    """``GET courses/<id>/attendance`` (JSON; ``?format=csv`` for the CSV export): instructors and admins."""

    @web.authenticated
    async def get(self, course_id):
        course, rows = await classroom(self).attendance(course_id, self.user_name, self.admin)
        if self.get_argument("format", "json") == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{course.id}-attendance.csv"')
            self.finish(attendance.to_csv(course.id, rows))
            return
        self.write_json({"course": course.id, "sessions": rows})


def routes(route):
    return [
        (route("api/v1/me/hands"), MyHandsHandler),
        (route(rf"api/v1/me/hands/{COURSE}"), MyHandHandler),
        (route(rf"api/v1/me/hands/{COURSE}/(accept|end)"), MyHandStepHandler),
        (route(rf"api/v1/courses/{COURSE}/hands"), CourseHandsHandler),
        (route(rf"api/v1/courses/{COURSE}/hands/(stream)"), CourseHandsHandler),
        (route(rf"api/v1/courses/{COURSE}/hands/([0-9]{{1,12}})/(take|ask)"), HandStepHandler),
        (route(rf"api/v1/courses/{COURSE}/audit"), AuditHandler),
        (route(rf"api/v1/courses/{COURSE}/announcements"), AnnouncementsHandler),
        (route(rf"api/v1/courses/{COURSE}/materials/push"), PushHandler),
        (route(rf"api/v1/me/materials/{COURSE}/reset"), ResetHandler),
        (route(rf"api/v1/courses/{COURSE}/attendance"), AttendanceHandler),
    ]
