"""What every aifhub spawner does, whatever runs the sandbox: course choice, admission, progress.

The local spawner and the Kubernetes spawner both mix this in; it owns the
conversation with the aifhub service and the spawn progress events.
"""

import asyncio
import os
import re

from jupyterhub.spawner import SpawnException
from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from .form import render_form
from .refusal import SpawnRefusal
from .service_client import ServiceClient

COURSE_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _course_option(spawner, user_options):
    """JupyterHub's ``apply_user_options``: the one option, ``course``, is the admission's to check and apply
    (:meth:`CourseSpawnerMixin.admit`); anything else is ignored. Declared, so the hub does not warn on every spawn."""


class CourseSpawnerMixin(LoggingConfigurable):
    """Mix into a JupyterHub Spawner: pick a course, get it admitted, report progress."""

    service_url = Unicode(
        help="URL of the aifhub service's prefix, reached directly from the hub. Default: $AIFHUB_SERVICE_URL.",
    ).tag(config=True)
    internal_token = Unicode(
        help="Secret shared with the aifhub service for admission calls. Default: $AIFHUB_INTERNAL_TOKEN.",
    ).tag(config=True)

    @default("service_url")
    def _service_url_default(self):
        return os.environ.get("AIFHUB_SERVICE_URL", "http://127.0.0.1:10101/services/aifhub/")

    @default("internal_token")
    def _internal_token_default(self):
        return os.environ.get("AIFHUB_INTERNAL_TOKEN", "")

    @property
    def service(self):
        return ServiceClient(self.service_url, self.internal_token)

    # -- choosing a course -------------------------------------------------

    @default("options_form")
    def _options_form_default(self):
        return self._render_options_form

    async def _render_options_form(self, spawner):
        offers = await self.service.offers(self.user.name, self.user.admin)
        return render_form(offers, self.isolated)

    @default("apply_user_options")
    def _apply_user_options_default(self):
        return _course_option

    def options_from_form(self, formdata):
        return {"course": (formdata.get("course") or [""])[0]}

    def options_from_query(self, query_data):
        return self.options_from_form(query_data)

    @property
    def course_id(self):
        """The course the spawn asks for; "" when it names none (a stock client's empty body, the admin page's
        "Start Server"): the service then picks the one the learner started last, or their only course."""
        course = self.user_options.get("course") or ""
        if course == "":
            return ""
        if not isinstance(course, str) or not COURSE_ID.match(course):
            raise SpawnRefusal(
                f'Invalid course id {course!r}: send {{"course": "<id>"}} with a course id such as \'dl-basics\'.',
                reason="bad-course-id",
                status_code=400,
            )
        return course

    # -- progress ------------------------------------------------------------

    def _progress_reset(self):
        self._events = []
        self._events_changed = asyncio.Event()

    def emit(self, percent, message):
        if not hasattr(self, "_events"):
            self._progress_reset()
        self._events.append({"progress": percent, "message": message})
        self._events_changed.set()
        self.log.info("Spawn %s: %s", self._log_name, message)

    async def progress(self):
        if not hasattr(self, "_events"):
            self._progress_reset()
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            self._events_changed.clear()
            try:
                await asyncio.wait_for(self._events_changed.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass

    # -- admission -----------------------------------------------------------

    async def admit(self, pending=False):
        """Ask the service to admit this spawn; returns the admission (devices, uid, course). ``pending``: the
        sandbox still has to be placed (a pod): the service charges nothing until :meth:`running`."""
        self._progress_reset()
        course_id = self.course_id
        self.emit(5, f"Checking course {course_id}" if course_id else "No course given: choosing yours")
        admission = await self.service.admit(
            self.user.name,
            self.name,
            course_id,
            self.user.admin,
            warm=getattr(self, "takes_warm", False),
            pending=pending,
        )
        if admission.get("chosen"):
            course_id = admission["course"]["id"]
            self.user_options = {**self.user_options, "course": course_id}  # kept: a restart starts it again
            self.emit(8, f"No course given: starting {admission['course']['title']} ({admission['chosen']})")
        if "waiting" in admission:
            admission = await self._wait_for_gpu(course_id, admission)
        self.admission = admission
        course = admission["course"]
        self.emit(20, f"Course checked: {course['title']} ({admission['role']})")
        if admission["devices"]:
            ids = ",".join(d["id"] for d in admission["devices"])
            self.emit(30, f"GPU assigned: device {ids} ({admission['devices'][0]['kind']})")
        elif course["sandbox"].get("gpu"):  # a cluster's device plugin places it
            gpu = course["sandbox"]["gpu"]
            self.emit(30, f"GPU to be placed by the cluster: {gpu['count']} × {gpu['kind']}")
        else:
            self.emit(30, "CPU-only sandbox: no GPU needed")
        return admission

    async def _wait_for_gpu(self, course_id, answer):
        """In the GPU waitlist: report the place in line until a device is held for us, then be admitted.

        Nothing is charged meanwhile. A learner who stops the spawn leaves the line; when the service restarts,
        the place is kept and the wait goes on.
        """
        entry = answer["waiting"]
        title = answer["course"]["title"]
        shown, outage = None, 0
        try:
            while True:
                if entry["state"] == "offered":
                    self.emit(18, f"A GPU is free and held for you: starting {title}")
                    answer = await self.service.admit(
                        self.user.name, self.name, course_id, self.user.admin, warm=getattr(self, "takes_warm", False)
                    )
                    if "waiting" not in answer:
                        return answer
                    entry = answer["waiting"]
                    continue
                if entry["state"] != "waiting":
                    raise SpawnException(
                        f"You are no longer in the GPU waitlist of {title} ({entry['state']}).",
                        reason="waitlist-" + entry["state"],
                        status_code=409,
                    )
                note = (entry.get("position"), entry.get("estimate_s"))
                if note != shown:
                    shown = note
                    self.emit(10, _waiting_message(title, entry))
                try:
                    found = await self.service.wait_in_line(entry["id"], wait=10)
                    outage = 0
                except SpawnException as exc:
                    if getattr(exc, "reason", None) != "service-unreachable" or outage > 12:
                        raise
                    outage += 1  # the service restarts: the place in line is kept in its database
                    self.emit(10, "GPU waitlist: the aifhub service is not answering; you keep your place in line")
                    await asyncio.sleep(min(10, 2**outage))
                    continue
                entry = found
        except asyncio.CancelledError:
            # the learner stopped the spawn: out of the line (best effort; at a hub shutdown the place is kept)
            asyncio.ensure_future(self._leave_line(entry["id"]))
            raise

    async def _leave_line(self, entry_id):
        try:
            await self.service.leave_waitlist(self.user.name, entry_id)
        except SpawnException as exc:
            self.log.info("%s stays in the waitlist: %s", self._log_name, exc.log_message or exc)

    async def release(self, reason):
        try:
            await self.service.release(self.user.name, self.name, reason)
        except SpawnException as exc:  # service down: its reconciliation settles it later
            self.log.warning("Could not release %s's sandbox: %s", self._log_name, exc.log_message)

    async def tell(self, kind, course_id):
        """Have the learner told what happened in their sandbox (see the service's sandbox events)."""
        try:
            await self.service.sandbox_event(self.user.name, course_id, kind)
        except SpawnException as exc:
            self.log.warning("Could not report a %s event of %s's sandbox: %s", kind, self._log_name, exc.log_message)
        else:
            self.log.info("%s's sandbox: %s event reported", self._log_name, kind)

    def gpu_env(self, devices):
        """Environment that pins CUDA to exactly the assigned devices (none for CPU-only courses): GPU indexes,
        MIG instances' UUIDs, the shared GPU of a time-slice or MPS share (with the MPS caps)."""
        ids = ",".join(dict.fromkeys(d.get("visible") or d["id"] for d in devices))
        env = {
            "CUDA_VISIBLE_DEVICES": ids,
            "NVIDIA_VISIBLE_DEVICES": ids or "void",
        }
        for d in devices:
            env.update(d.get("env") or {})
        return env


def _waiting_message(title, entry):
    place = entry.get("position") or 1
    estimate = entry.get("estimate_s")
    if estimate is None:
        when = "no estimate yet"
    elif estimate < 60:
        when = "about a minute"
    else:
        when = f"about {round(estimate / 60)} min"
    return (
        f"GPU waitlist: every GPU for {title} is in use; you are number {place} in line ({when}). "
        "Nothing is charged while you wait; Stop leaves the line."
    )
