"""Usage reports and exports: table/CSV/JSON rows, Waldur component usages, EMI CAR records."""

import csv
import io
from collections import defaultdict
from datetime import datetime
from xml.etree import ElementTree as ET

from sqlalchemy import func, select

from ..texts import csv_row
from .models import SandboxSession, UsageEvent
from .units import ms_to_hours

CAR_NS = "http://eu-emi.eu/namespaces/2012/11/computerecord"
URF_NS = "http://eu-emi.eu/namespaces/2012/11/computerecord"


def _filtered(q, model, allocation, course, user):
    """``q`` narrowed to an allocation, a course and a user, where given (sessions and events name them alike)."""
    for column, value in (("allocation_id", allocation), ("course_id", course), ("user", user)):
        if value:
            q = q.where(getattr(model, column) == value)
    return q


def session_rows(db, allocation=None, course=None, user=None):
    """One row per session with its charged totals (what table, csv and json show)."""
    q = (
        select(
            SandboxSession,
            func.min(UsageEvent.start_at),
            func.max(UsageEvent.end_at),
            func.coalesce(func.sum(UsageEvent.gpu_ms), 0),
            func.coalesce(func.sum(UsageEvent.cpu_ms), 0),
            func.count(UsageEvent.id),
        )
        .join(UsageEvent, UsageEvent.session_id == SandboxSession.id, isouter=True)
        .group_by(SandboxSession.id)
        .order_by(SandboxSession.id)
    )
    q = _filtered(q, SandboxSession, allocation, course, user)
    rows = []
    for s, first, last, gpu_ms, cpu_ms, events in db.execute(q):
        rows.append(
            {
                "session": s.id,
                "user": s.user,
                "course": s.course_id,
                "allocation": s.allocation_id,
                "gpu_kind": s.gpu_kind,
                "gpus": s.gpu_count,
                "state": s.state,
                "start": (first or s.started_at).isoformat(),
                "end": (last or s.ended_at or s.started_at).isoformat(),
                "gpu_hours": ms_to_hours(int(gpu_ms)),
                "cpu_hours": ms_to_hours(int(cpu_ms)),
                "gpu_ms": int(gpu_ms),
                "cpu_ms": int(cpu_ms),
                "events": int(events),
                "gpu_idle_hours": ms_to_hours(int(s.gpu_idle_ms or 0)),  # wall time its GPU sat idle (telemetry)
            }
        )
    return rows


def to_csv(rows):
    out = io.StringIO()
    fields = [
        "session",
        "user",
        "course",
        "allocation",
        "gpu_kind",
        "gpus",
        "state",
        "start",
        "end",
        "gpu_hours",
        "cpu_hours",
        "gpu_ms",
        "cpu_ms",
        "events",
        "gpu_idle_hours",
        "name",  # last: who the user is, where a login said (columns before them keep their places)
        "email",
    ]
    writer = csv.DictWriter(out, fieldnames=fields, restval="")  # name, email: where the service knows them
    writer.writeheader()
    writer.writerows(csv_row(row) for row in rows)  # no cell starts a spreadsheet formula
    return out.getvalue()


def waldur(db, allocation=None, course=None, user=None):
    """Waldur component usages per allocation and month: absolute monthly totals (``set_usage``) in
    GPU-hours and CPU-hours, and per-user usages (``set_user_usages``)."""
    q = _filtered(select(UsageEvent), UsageEvent, allocation, course, user)
    totals = defaultdict(lambda: {"gpu": 0, "cpu": 0, "users": defaultdict(lambda: {"gpu": 0, "cpu": 0})})
    for e in db.scalars(q):
        month = e.end_at.strftime("%Y-%m-01")
        t = totals[(e.allocation_id or "unallocated", month)]
        t["gpu"] += e.gpu_ms
        t["cpu"] += e.cpu_ms
        t["users"][e.user]["gpu"] += e.gpu_ms
        t["users"][e.user]["cpu"] += e.cpu_ms
    payloads = []
    for (alloc, month), t in sorted(totals.items()):
        payloads.append(
            {
                "allocation": alloc,
                "set_usage": {
                    "resource": alloc,
                    "date": month,
                    "usages": [
                        {
                            "type": "gpu",
                            "amount": f"{t['gpu'] / 3.6e6:.2f}",
                            "description": f"aifhub training GPU-hours, {month[:7]}",
                        },
                        {
                            "type": "cpu",
                            "amount": f"{t['cpu'] / 3.6e6:.2f}",
                            "description": f"aifhub training CPU-hours, {month[:7]}",
                        },
                    ],
                },
                "set_user_usages": {
                    "component_type": "gpu",
                    "date": month,
                    "usages": [
                        {"username": u, "usage": f"{v['gpu'] / 3.6e6:.2f}"} for u, v in sorted(t["users"].items())
                    ],
                },
            }
        )
    return payloads


def _iso_duration(ms):
    return f"PT{ms // 1000}S"


def car_xml(db, machine="aifhub", site="aifhub", allocation=None, course=None, user=None):
    """One EMI Compute Accounting Record per session, as an XML document (UsageRecords)."""
    ET.register_namespace("urf", CAR_NS)
    root = ET.Element(f"{{{CAR_NS}}}UsageRecords")
    for row in session_rows(db, allocation, course, user):
        if not row["events"]:
            continue
        rec = ET.SubElement(root, f"{{{CAR_NS}}}UsageRecord")
        ident = ET.SubElement(rec, f"{{{CAR_NS}}}RecordIdentity")
        ident.set(f"{{{CAR_NS}}}recordId", f"{machine} {row['session']} {row['end']}")
        ident.set(f"{{{CAR_NS}}}createTime", row["end"])
        job = ET.SubElement(rec, f"{{{CAR_NS}}}JobIdentity")
        ET.SubElement(job, f"{{{CAR_NS}}}LocalJobId").text = str(row["session"])
        uid = ET.SubElement(rec, f"{{{CAR_NS}}}UserIdentity")
        ET.SubElement(uid, f"{{{CAR_NS}}}LocalUserId").text = row["user"]
        ET.SubElement(uid, f"{{{CAR_NS}}}GroupAttribute", {f"{{{CAR_NS}}}type": "ProjectName"}).text = (
            row["allocation"] or ""
        )
        ET.SubElement(uid, f"{{{CAR_NS}}}GroupAttribute", {f"{{{CAR_NS}}}type": "course"}).text = row["course"]
        ET.SubElement(rec, f"{{{CAR_NS}}}Status").text = "completed" if row["state"] == "ended" else "started"
        start_ms = row["gpu_ms"]
        wall_ms = int((_parse(row["end"]) - _parse(row["start"])).total_seconds() * 1000)
        ET.SubElement(rec, f"{{{CAR_NS}}}WallDuration").text = _iso_duration(wall_ms)
        ET.SubElement(rec, f"{{{CAR_NS}}}CpuDuration", {f"{{{CAR_NS}}}usageType": "all"}).text = _iso_duration(
            row["cpu_ms"]
        )
        ET.SubElement(
            rec, f"{{{CAR_NS}}}ServiceLevel", {f"{{{CAR_NS}}}type": "GPUhours"}
        ).text = f"{start_ms / 3.6e6:.4f}"
        ET.SubElement(rec, f"{{{CAR_NS}}}StartTime").text = row["start"]
        ET.SubElement(rec, f"{{{CAR_NS}}}EndTime").text = row["end"]
        ET.SubElement(rec, f"{{{CAR_NS}}}MachineName").text = machine
        ET.SubElement(rec, f"{{{CAR_NS}}}Site").text = site
        if row["gpus"]:
            ET.SubElement(
                rec, f"{{{CAR_NS}}}Resource", {f"{{{CAR_NS}}}description": "GPUs"}
            ).text = f"{row['gpus']}x{row['gpu_kind']}"
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _parse(text):
    return datetime.fromisoformat(text)


def daily_gpu_hours(db, allocation=None, course=None):
    """``[(YYYY-MM-DD, GPU-hours), ...]`` charged per day (by the end of each event)."""
    q = _filtered(select(UsageEvent.end_at, UsageEvent.gpu_ms), UsageEvent, allocation, course, None)
    days = defaultdict(int)
    for end_at, gpu_ms in db.execute(q):
        days[end_at.strftime("%Y-%m-%d")] += gpu_ms
    return [(day, ms / 3.6e6) for day, ms in sorted(days.items())]


def per_learner(db, course):
    """``{user: {"gpu_hours", "cpu_hours", "sessions"}}`` for a course."""
    out = {}
    for row in session_rows(db, course=course):
        u = out.setdefault(row["user"], {"gpu_hours": 0.0, "cpu_hours": 0.0, "sessions": 0})
        u["gpu_hours"] += row["gpu_hours"]
        u["cpu_hours"] += row["cpu_hours"]
        u["sessions"] += 1
    return out
