"""REST for the ledger: allocations (admins), usage reports (scoped to the caller), Prometheus metrics."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado import web

from ..ledger import allocations, reports
from ..ledger.balances import course_usage
from ..ledger.errors import Refusal
from .base import APIHandler

FORMATS = ("json", "csv", "waldur", "car")


class AllocationsHandler(APIHandler):
    @web.authenticated
    def get(self):
        self.require_admin()
        with self.core.db.session() as s:
            self.write_json({"allocations": allocations.list_all(s)})

    @web.authenticated
    def post(self):
        self.require_admin()
        body = self.json_body()
        try:
            with self.core.db.session() as s:
                a = allocations.create(s, body.get("id"), body.get("gpu_hours"), body.get("start"), body.get("end"),
                                       title=body.get("title", ""), access_call=body.get("access_call", ""),
                                       owner=body.get("owner", ""))
                data = allocations.describe(s, a)
        except Refusal as refusal:
            return self.refuse(refusal)
        self.write_json(data, status=201)


class AllocationHandler(APIHandler):
    @web.authenticated
    def get(self, allocation_id):
        self.require_admin()
        try:
            with self.core.db.session() as s:
                data = allocations.describe(s, allocations.get(s, allocation_id))
                data["courses"] = [c.id for c in self.core.catalog.courses.values() if c.allocation == allocation_id]
        except Refusal as refusal:
            return self.refuse(refusal)
        self.write_json(data)

    @web.authenticated
    def post(self, allocation_id, action):
        self.require_admin()
        body = self.json_body()
        try:
            with self.core.db.session() as s:
                if action == "topup":
                    a = allocations.topup(s, allocation_id, body.get("gpu_hours"), body.get("note", ""))
                else:
                    a = allocations.close(s, allocation_id, body.get("note", ""))
                data = allocations.describe(s, a)
        except Refusal as refusal:
            return self.refuse(refusal)
        self.write_json(data)


class UsageHandler(APIHandler):
    """Admins see all usage; instructors their courses' usage per learner; learners their own."""

    @web.authenticated
    def get(self):
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
        with self.core.db.session() as s:
            if fmt == "waldur":
                return self.write_json({"payloads": reports.waldur(s, allocation, course, user)})
            if fmt == "car":
                self.set_header("Content-Type", "application/xml")
                return self.finish(reports.car_xml(s, allocation=allocation, course=course, user=user))
            rows = reports.session_rows(s, allocation, course, user)
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv")
            self.set_header("Content-Disposition", 'attachment; filename="aifhub-usage.csv"')
            return self.finish(reports.to_csv(rows))
        self.write_json({"sessions": rows})


class LedgerCollector:
    """Prometheus metrics read from the ledger at scrape time."""

    def __init__(self, core):
        self.core = core

    def collect(self):
        granted = GaugeMetricFamily("aifhub_allocation_granted_gpu_hours", "GPU-hours granted", labels=["allocation"])
        used = GaugeMetricFamily("aifhub_allocation_used_gpu_hours", "GPU-hours charged", labels=["allocation"])
        held = GaugeMetricFamily("aifhub_allocation_held_gpu_hours", "GPU-hours held by running sandboxes", labels=["allocation"])
        c_used = GaugeMetricFamily("aifhub_course_used_gpu_hours", "GPU-hours charged to a course", labels=["course"])
        c_held = GaugeMetricFamily("aifhub_course_held_gpu_hours", "GPU-hours held in a course", labels=["course"])
        refusals = CounterMetricFamily("aifhub_spawn_refusals", "Spawns refused, by reason", labels=["reason"])
        with self.core.db.session() as s:
            for a in allocations.list_all(s):
                granted.add_metric([a["id"]], a["granted_gpu_hours"])
                used.add_metric([a["id"]], a["used_gpu_hours"])
                held.add_metric([a["id"]], a["held_gpu_hours"])
            for course_id in sorted(self.core.catalog.courses):
                u = course_usage(s, course_id)
                c_used.add_metric([course_id], u["used_gpu_ms"] / 3.6e6)
                c_held.add_metric([course_id], u["held_gpu_ms"] / 3.6e6)
        for reason, count in sorted(self.core.refusals.items()):
            refusals.add_metric([reason], count)
        yield from (granted, used, held, c_used, c_held, refusals)


class MetricsHandler(APIHandler):
    @web.authenticated
    def get(self):
        self.require_admin()
        registry = CollectorRegistry()
        registry.register(LedgerCollector(self.core))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(registry))
