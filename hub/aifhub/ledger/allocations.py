"""Allocation records: create, top up, close, and show them with their balance."""

import re
from datetime import date

from sqlalchemy import select

from ..errors import Refusal
from .balances import allocation_balance
from .models import Allocation, AllocationChange, utcnow
from .units import hours_to_ms, ms_to_hours

ALLOCATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _positive_hours(hours, what):
    try:
        value = float(hours)
    except (TypeError, ValueError):
        raise Refusal("bad-hours", f"{what} must be a number of GPU-hours, got {hours!r}")
    if not value > 0:
        raise Refusal("bad-hours", f"{what} must be more than 0 GPU-hours, got {hours!r}")
    return value


def _date(value, what):
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise Refusal("bad-date", f"The {what} date must be written YYYY-MM-DD, got {value!r}")


def allocation_state(allocation, today):
    """None when usable today, else a (reason, sentence) pair."""
    if allocation.status != "active":
        return "allocation-closed", f"the allocation {allocation.id} is closed"
    if allocation.start_date and today < allocation.start_date:
        return "allocation-not-started", f"the allocation {allocation.id} starts on {allocation.start_date}"
    if allocation.end_date and today > allocation.end_date:
        return "allocation-expired", f"the allocation {allocation.id} ended on {allocation.end_date}"
    return None


def get(db, allocation_id):
    allocation = db.get(Allocation, allocation_id)
    if allocation is None:
        raise Refusal("unknown-allocation", f"There is no allocation '{allocation_id}'.")
    return allocation


def create(db, allocation_id, gpu_hours, start=None, end=None, title="", access_call="", owner=""):
    if not isinstance(allocation_id, str) or not ALLOCATION_ID.match(allocation_id):
        raise Refusal("bad-id", f"Allocation id {allocation_id!r} is not valid: letters, digits, '.', '_' and '-', up to 64.")
    hours = _positive_hours(gpu_hours, "The granted GPU-hours")
    start, end = _date(start, "start"), _date(end, "end")
    if start and end and end < start:
        raise Refusal("bad-date", f"The allocation would end ({end}) before it starts ({start}).")
    if db.get(Allocation, allocation_id) is not None:
        raise Refusal("exists", f"The allocation '{allocation_id}' exists already; use topup to add hours.")
    allocation = Allocation(id=allocation_id, title=title or "", access_call=access_call or "", owner=owner or "",
                            granted_gpu_ms=hours_to_ms(hours), start_date=start, end_date=end, status="active")
    db.add(allocation)
    db.add(AllocationChange(allocation_id=allocation_id, action="create", delta_gpu_ms=allocation.granted_gpu_ms,
                            note=title or ""))
    db.flush()
    return allocation


def topup(db, allocation_id, gpu_hours, note=""):
    allocation = get(db, allocation_id)
    if allocation.status != "active":
        raise Refusal("closed", f"The allocation '{allocation_id}' is closed; create a new one.")
    delta = hours_to_ms(_positive_hours(gpu_hours, "The GPU-hours to add"))
    allocation.granted_gpu_ms += delta
    db.add(AllocationChange(allocation_id=allocation_id, action="topup", delta_gpu_ms=delta, note=note or ""))
    return allocation


def close(db, allocation_id, note=""):
    allocation = get(db, allocation_id)
    if allocation.status == "closed":
        return allocation
    allocation.status = "closed"
    db.add(AllocationChange(allocation_id=allocation_id, action="close", delta_gpu_ms=0, note=note or ""))
    return allocation


def describe(db, allocation, today=None):
    """A JSON-ready view with the balance in GPU-hours."""
    b = allocation_balance(db, allocation)
    problem = allocation_state(allocation, today or utcnow().date())
    return {
        "id": allocation.id, "title": allocation.title, "access_call": allocation.access_call,
        "owner": allocation.owner, "status": allocation.status,
        "usable": problem is None, "why_not": problem[1] if problem else None,
        "start": allocation.start_date.isoformat() if allocation.start_date else None,
        "created": allocation.created_at.isoformat(),
        "end": allocation.end_date.isoformat() if allocation.end_date else None,
        "granted_gpu_hours": ms_to_hours(b["granted_gpu_ms"]), "used_gpu_hours": ms_to_hours(b["used_gpu_ms"]),
        "held_gpu_hours": ms_to_hours(b["held_gpu_ms"]), "remaining_gpu_hours": ms_to_hours(b["remaining_gpu_ms"]),
        "used_cpu_hours": ms_to_hours(b["used_cpu_ms"]),
    }


def list_all(db):
    return [describe(db, a) for a in db.scalars(select(Allocation).order_by(Allocation.id))]
