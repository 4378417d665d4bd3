"""``GET /services/aifhub/api/v1/courses/<id>/materials``: a course's materials, for pods to unpack.

Kubernetes sandboxes fetch them with their server's token (see :mod:`aifhub.kube.materials`);
whoever may start the course's sandbox may have them, nobody else.
"""

import asyncio

from tornado import web

from ..kube.materials import course_archive
from .base import APIHandler


class MaterialsHandler(APIHandler):
    @web.authenticated
    async def get(self, course_id):
        course = self.core.catalog.get(course_id)
        if course is None:
            raise web.HTTPError(404, f"There is no course '{course_id}'.")
        decision = await self.core.membership.access(course, self.user_name, self.admin)
        if not decision.allowed:
            raise web.HTTPError(403, decision.message)
        data = await asyncio.to_thread(course_archive, course.path)
        self.set_header("Content-Type", "application/gzip")
        self.set_header("Content-Disposition", f'attachment; filename="{course.id}-materials.tar.gz"')
        self.finish(data)
