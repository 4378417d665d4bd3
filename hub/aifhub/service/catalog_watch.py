"""The course catalog as the service holds it: loaded from the course folders, reloaded when they change
(publishing needs no restart), with instructors' sources kept private."""

import asyncio
import logging
import os
import stat

from .. import fsafe
from ..auth.grants import apply_staff
from ..catalog import load_catalog, load_images
from ..catalog.loader import fingerprint

log = logging.getLogger(__name__)


class CatalogWatch:
    """The current :class:`~aifhub.catalog.Catalog` of ``course_dirs``; :meth:`watch` reloads it when files change."""

    def __init__(self, course_dirs, images_dir, protect_sources=False):
        self.course_dirs = list(course_dirs)
        self.images_dir = images_dir
        self.protect_sources = protect_sources
        self.catalog = None
        self._fingerprint = None
        self.staff = {}  # course id -> instructors granted by logins (aifhub.auth.grants.refresh_staff)
        self.reload()

    def get(self, course_id):
        return self.catalog.get(course_id)

    def reload(self, force=True):
        """Reload course files; returns True when something changed. Reads files: on the event loop, use
        :meth:`watch`."""
        fp = fingerprint(self.course_dirs)
        if not force and fp == self._fingerprint:
            return False
        catalog = load_catalog(self.course_dirs, load_images(self.images_dir))
        for name, problems in catalog.broken.items():
            log.warning("Course %s is broken and unavailable:\n  %s", name, "\n  ".join(map(str, problems)))
        log.info("Catalog: %d course(s), %d broken", len(catalog.courses), len(catalog.broken))
        if self.protect_sources:
            protect_sources(catalog)
        apply_staff(catalog, self.staff)  # instructors granted by logins
        self._fingerprint, self.catalog = fp, catalog
        return True

    async def watch(self, force=False):
        """:meth:`reload` in a thread; True when the catalog changed."""
        return await asyncio.to_thread(self.reload, force)

    def broken_courses(self):
        return {name: [p.to_dict() for p in problems] for name, problems in sorted(self.catalog.broken.items())}


def protect_sources(catalog):
    """Instructors' nbgrader sources (solutions, hidden tests) readable by the hub's user only.

    Learners' sandboxes and grading kernels run as other uids; the hub copies materials for them
    and the grading workers copy what they grade, so nothing of theirs needs to read ``source/``.
    """
    for course in catalog.courses.values():
        source = course.path / "source"
        try:
            with fsafe.opened(course.path) as folder:  # never through a link
                st = folder.lstat("source")
                if st is None or not stat.S_ISDIR(st.st_mode):
                    if st is not None:
                        log.warning("Left %s as it is: it is %s, not a folder", source, fsafe.kind(st.st_mode))
                    continue
                if st.st_mode & 0o077:
                    with folder.sub("source") as d:
                        os.fchmod(d.fd, 0o700)
                    log.info("Made %s private to the hub's user (it holds solutions)", source)
        except OSError as exc:
            log.warning("Could not make %s private: %s", source, exc)
