"""REST for the ledger: allocations (admins), usage reports (scoped to the caller), Prometheus metrics."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado import web

from ..auth.people import with_names
from ..ledger import allocations, reports
from ..ledger.balances import course_usage
from ..errors import Refusal
from .base import APIHandler

FORMATS = ("json", "csv", "waldur", "car")


def _create(s, body):
    a = allocations.create(
        s,
        body.get("id"),
        body.get("gpu_hours"),
        body.get("start"),
        body.get("end"),
        title=body.get("title", ""),
        access_call=body.get("access_call", ""),
        owner=body.get("owner", ""),
    )
    return allocations.describe(s, a)


def _describe(s, allocation_id):
    return allocations.describe(s, allocations.get(s, allocation_id))


def _change(s, allocation_id, action, body):
    if action == "topup":
        a = allocations.topup(s, allocation_id, body.get("gpu_hours"), body.get("note", ""))
    else:
        a = allocations.close(s, allocation_id, body.get("note", ""))
    return allocations.describe(s, a)


def _usage(s, fmt, allocation, course, user):
    if fmt == "waldur":
        return reports.waldur(s, allocation, course, user)
    if fmt == "car":
        return reports.car_xml(s, allocation=allocation, course=course, user=user)
    return with_names(s, reports.session_rows(s, allocation, course, user))  # who each opaque user name is


def _metrics(s, course_ids):
    return allocations.list_all(s), {course_id: course_usage(s, course_id) for course_id in course_ids}


class AllocationsHandler(APIHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        self.write_json({"allocations": await self.core.db.run(allocations.list_all)})

    @web.authenticated
    async def post(self):
        self.require_admin()
        body = self.json_body()
        try:
            data = await self.core.db.run(_create, body)
        except Refusal as refusal:
            return self.refuse(refusal)
        self.core.ledger_changed()
        self.write_json(data, status=201)


class AllocationHandler(APIHandler):
    @web.authenticated
    async def get(self, allocation_id):
        self.require_admin()
        try:
            data = await self.core.db.run(_describe, allocation_id)
        except Refusal as refusal:
            return self.refuse(refusal)
        data["courses"] = [c.id for c in self.core.catalog.courses.values() if c.allocation == allocation_id]
        self.write_json(data)

    @web.authenticated
    async def post(self, allocation_id, action):
        self.require_admin()
        body = self.json_body()
        try:
            data = await self.core.db.run(_change, allocation_id, action, body)
        except Refusal as refusal:
            return self.refuse(refusal)
        self.core.ledger_changed()
        self.write_json(data)


class UsageHandler(APIHandler):
    """Admins see all usage; instructors their courses' usage per learner; learners their own."""

    @web.authenticated
    async def get(self):
        fmt = self.get_argument("format", "json")
        if fmt not in FORMATS:
            raise web.HTTPError(400, f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
        allocation = self.get_argument("allocation", None)
        course = self.get_argument("course", None)
        user = self.get_argument("user", None)
        if not self.admin:
            taught = {c.id for c in self.core.catalog.courses.values() if c.is_instructor(self.user_name)}
            if course and course in taught:
                allocation = None  # an instructor sees their course, whatever pays for it
            elif user in (None, self.user_name) and course not in taught:
                user = self.user_name  # a learner sees their own usage
            else:
                raise web.HTTPError(403, "You may see your own usage, and your courses' usage if you teach them.")
        data = await self.core.db.run(_usage, fmt, allocation, course, user)
        if fmt == "waldur":
            return self.write_json({"payloads": data})
        if fmt == "car":
            self.set_header("Content-Type", "application/xml")
            return self.finish(data)
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv")
            self.set_header("Content-Disposition", 'attachment; filename="aifhub-usage.csv"')
            return self.finish(reports.to_csv(data))
        self.write_json({"sessions": data})


class LedgerCollector:
    """Prometheus metrics of the ledger, from figures read before the scrape is rendered."""

    def __init__(self, allocation_rows, course_usages, refusals):
        self.allocation_rows = allocation_rows
        self.course_usages = course_usages
        self.refusals = refusals

    def collect(self):
        granted = GaugeMetricFamily("aifhub_allocation_granted_gpu_hours", "GPU-hours granted", labels=["allocation"])
        used = GaugeMetricFamily("aifhub_allocation_used_gpu_hours", "GPU-hours charged", labels=["allocation"])
        held = GaugeMetricFamily(
            "aifhub_allocation_held_gpu_hours", "GPU-hours held by running sandboxes", labels=["allocation"]
        )
        c_used = GaugeMetricFamily("aifhub_course_used_gpu_hours", "GPU-hours charged to a course", labels=["course"])
        c_held = GaugeMetricFamily("aifhub_course_held_gpu_hours", "GPU-hours held in a course", labels=["course"])
        refusals = CounterMetricFamily("aifhub_spawn_refusals", "Spawns refused, by reason", labels=["reason"])
        for a in self.allocation_rows:
            granted.add_metric([a["id"]], a["granted_gpu_hours"])
            used.add_metric([a["id"]], a["used_gpu_hours"])
            held.add_metric([a["id"]], a["held_gpu_hours"])
        for course_id, u in sorted(self.course_usages.items()):
            c_used.add_metric([course_id], u["used_gpu_ms"] / 3.6e6)
            c_held.add_metric([course_id], u["held_gpu_ms"] / 3.6e6)
        for reason, count in sorted(self.refusals.items()):
            refusals.add_metric([reason], count)
        yield from (granted, used, held, c_used, c_held, refusals)


class MetricsHandler(APIHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        rows, usages = await self.core.db.run(_metrics, sorted(self.core.catalog.courses))
        registry = CollectorRegistry()
        registry.register(LedgerCollector(rows, usages, dict(self.core.admission.refusals)))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(registry))
