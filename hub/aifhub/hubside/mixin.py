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
        course = self.user_options.get("course", "")
        if not isinstance(course, str) or not COURSE_ID.match(course):
            raise SpawnRefusal(
                f"Invalid course id {course!r}: send {{\"course\": \"<id>\"}} with a course id such as 'dl-basics'.",
                reason="bad-course-id", status_code=400,
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

    async def admit(self):
        """Ask the service to admit this spawn; returns the admission (devices, uid, course)."""
        self._progress_reset()
        course_id = self.course_id
        self.emit(5, f"Checking course {course_id}")
        admission = await self.service.admit(self.user.name, self.name, course_id, self.user.admin)
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

    async def release(self, reason):
        try:
            await self.service.release(self.user.name, self.name, reason)
        except SpawnException as exc:  # service down: its reconciliation settles it later
            self.log.warning("Could not release %s's sandbox: %s", self._log_name, exc.log_message)

    def gpu_env(self, devices):
        """Environment that pins CUDA to exactly the assigned devices (none for CPU-only courses)."""
        ids = ",".join(d["id"] for d in devices)
        return {
            "CUDA_VISIBLE_DEVICES": ids,
            "NVIDIA_VISIBLE_DEVICES": ids or "void",
        }
