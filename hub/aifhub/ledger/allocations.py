"""Allocation records: create, top up, close, and show them with their balance."""

import re
from datetime import date

from sqlalchemy import select

from ..errors import Refusal
from ..texts import shown
from .balances import allocation_balance
from .models import Allocation, AllocationChange, utcnow
from .units import hours_to_ms, ms_to_hours

ALLOCATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


MAX_GPU_HOURS = 10_000_000_000  # far beyond any allocation, far below what the ledger's integers hold


def _positive_hours(hours, what):
    try:
        value = float(hours)
    except (TypeError, ValueError, OverflowError):
        raise Refusal("bad-hours", f"{what} must be a number of GPU-hours, got {shown(hours)}")
    if not value > 0:
        raise Refusal("bad-hours", f"{what} must be more than 0 GPU-hours, got {shown(hours)}")
    if not value <= MAX_GPU_HOURS:  # also inf and nan
        raise Refusal("bad-hours", f"{what} must be at most {MAX_GPU_HOURS:,} GPU-hours, got {shown(hours)}")
    return value


def _text(value, what, limit=255):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refusal("bad-field", f"The {what} must be text, got {shown(value)}")
    if len(value) > limit:
        raise Refusal("bad-field", f"The {what} has at most {limit} characters, got {len(value)}")
    return value


def _date(value, what):
    if value in (None, ""):
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise Refusal("bad-date", f"The {what} date must be written YYYY-MM-DD, got {shown(value)}")


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
        raise Refusal("unknown-allocation", f"There is no allocation {shown(allocation_id)}.")
    return allocation


def create(db, allocation_id, gpu_hours, start=None, end=None, title="", access_call="", owner=""):
    if not isinstance(allocation_id, str) or not ALLOCATION_ID.match(allocation_id):
        raise Refusal(
            "bad-id", f"Allocation id {shown(allocation_id)} is not valid: letters, digits, '.', '_' and '-', up to 64."
        )
    hours = _positive_hours(gpu_hours, "The granted GPU-hours")
    title, access_call, owner = _text(title, "title"), _text(access_call, "access call"), _text(owner, "owner")
    start, end = _date(start, "start"), _date(end, "end")
    if start and end and end < start:
        raise Refusal("bad-date", f"The allocation would end ({end}) before it starts ({start}).")
    if db.get(Allocation, allocation_id) is not None:
        raise Refusal("exists", f"The allocation '{allocation_id}' exists already; use topup to add hours.")
    allocation = Allocation(
        id=allocation_id,
        title=title or "",
        access_call=access_call or "",
        owner=owner or "",
        granted_gpu_ms=hours_to_ms(hours),
        start_date=start,
        end_date=end,
        status="active",
    )
    db.add(allocation)
    db.add(
        AllocationChange(
            allocation_id=allocation_id, action="create", delta_gpu_ms=allocation.granted_gpu_ms, note=title or ""
        )
    )
    db.flush()
    return allocation


def topup(db, allocation_id, gpu_hours, note=""):
    allocation = get(db, allocation_id)
    if allocation.status != "active":
        raise Refusal("closed", f"The allocation '{allocation_id}' is closed; create a new one.")
    delta = hours_to_ms(_positive_hours(gpu_hours, "The GPU-hours to add"))
    note = _text(note, "note")
    if allocation.granted_gpu_ms + delta > hours_to_ms(MAX_GPU_HOURS):
        raise Refusal("bad-hours", f"The allocation would then hold more than {MAX_GPU_HOURS:,} GPU-hours.")
    allocation.granted_gpu_ms += delta
    db.add(AllocationChange(allocation_id=allocation_id, action="topup", delta_gpu_ms=delta, note=note))
    return allocation


def close(db, allocation_id, note=""):
    allocation = get(db, allocation_id)
    if allocation.status == "closed":
        return allocation
    allocation.status = "closed"
    db.add(AllocationChange(allocation_id=allocation_id, action="close", delta_gpu_ms=0, note=_text(note, "note")))
    return allocation


def describe(db, allocation, today=None):
    """A JSON-ready view with the balance in GPU-hours."""
    b = allocation_balance(db, allocation)
    problem = allocation_state(allocation, today or utcnow().date())
    return {
        "id": allocation.id,
        "title": allocation.title,
        "access_call": allocation.access_call,
        "owner": allocation.owner,
        "status": allocation.status,
        "usable": problem is None,
        "why_not": problem[1] if problem else None,
        "start": allocation.start_date.isoformat() if allocation.start_date else None,
        "created": allocation.created_at.isoformat(),
        "end": allocation.end_date.isoformat() if allocation.end_date else None,
        "granted_gpu_hours": ms_to_hours(b["granted_gpu_ms"]),
        "used_gpu_hours": ms_to_hours(b["used_gpu_ms"]),
        "held_gpu_hours": ms_to_hours(b["held_gpu_ms"]),
        "remaining_gpu_hours": ms_to_hours(b["remaining_gpu_ms"]),
        "used_cpu_hours": ms_to_hours(b["used_cpu_ms"]),
    }


def list_all(db):
    return [describe(db, a) for a in db.scalars(select(Allocation).order_by(Allocation.id))]
