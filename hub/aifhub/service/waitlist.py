"""The GPU waitlist: a learner who finds every GPU of the local pool busy waits in line instead of being refused.

* Arrivals are kept in the state database (they survive restarts of the hub and the service).
* When a device frees, it is offered to the head of the line at once and held for that learner for
  ``hold_s`` seconds; nobody else can take it meanwhile. The learner's waiting spawn takes it within a
  second (it long-polls :meth:`Waitlist.wait`); a learner who is not there any more loses it when the
  hold expires, and it goes to the next.
* Fair across courses: the next device goes to the first in line of the course that holds the fewest
  GPUs right now (then to whoever came first), so one big course cannot starve a small one.
* Nothing is charged while waiting: the session (and its charging) begins at admission.
* Position and estimate: the line is played forward with the running sessions' ends (their
  ``max_session`` and what is left of their learner's quota) and each admitted session's expected
  length.
"""

import asyncio
import heapq
import logging
from datetime import timedelta

from sqlalchemy import select

from ..ledger import sessions
from ..ledger.balances import rate_ppm
from ..ledger.limits import limits_for
from ..ledger.models import SandboxSession, WaitlistEntry, utcnow
from ..ledger.units import rates_per_s

log = logging.getLogger(__name__)
LIVE = ("waiting", "offered")


# -- the line, played forward (pure) --------------------------------------------


def service_order(entries, gpus_by_course):
    """``entries`` (waiting, in arrival order) in the order devices will reach them: each next device goes to
    the first in line of the course holding the fewest GPUs (``gpus_by_course``), then to the earliest."""
    held = dict(gpus_by_course)
    lines = {}
    for e in sorted(entries, key=lambda e: e.id):
        lines.setdefault(e.course_id, []).append(e)
    order = []
    while lines:
        course = min(lines, key=lambda c: (held.get(c, 0), lines[c][0].id))
        entry = lines[course].pop(0)
        if not lines[course]:
            del lines[course]
        held[course] = held.get(course, 0) + entry.gpu_count
        order.append(entry)
    return order


def estimates(order, free_at, session_s):
    """Seconds until each entry of ``order`` gets its devices: ``free_at`` lists when each device of the pool is
    next free (seconds from now), ``session_s(entry)`` how long its session is expected to hold them."""
    heap = list(free_at)
    heapq.heapify(heap)
    out = {}
    for entry in order:
        if len(heap) < entry.gpu_count:
            out[entry.id] = None
            continue
        taken = [heapq.heappop(heap) for _ in range(entry.gpu_count)]
        start = max(taken)
        out[entry.id] = start
        for _ in taken:
            heapq.heappush(heap, start + session_s(entry))
    return out


# -- units of work --------------------------------------------------------------


def live_entry(s, user, server_name, course_id):
    return s.scalar(
        select(WaitlistEntry).where(
            WaitlistEntry.user == user,
            WaitlistEntry.server_name == server_name,
            WaitlistEntry.course_id == course_id,
            WaitlistEntry.state.in_(LIVE),
        )
    )


def waiting_for(s, kind, inventory):
    """Whether anyone waits for devices that a course of GPU ``kind`` could take."""
    kinds = {d.kind for d in inventory if d.matches(kind)}
    return any(
        _kind_overlaps(e.gpu_kind, kinds, inventory)
        for e in s.scalars(select(WaitlistEntry).where(WaitlistEntry.state == "waiting"))
    )


def _kind_overlaps(kind, kinds, inventory):
    return any(d.matches(kind) and d.kind in kinds for d in inventory)


def join(s, course, user, server_name):
    """Put ``user``'s server in line for ``course`` (or find it there). Returns the entry."""
    entry = live_entry(s, user, server_name, course.id)
    if entry is None:
        gpu = course.sandbox.gpu
        entry = WaitlistEntry(
            user=user,
            server_name=server_name,
            course_id=course.id,
            gpu_kind=gpu.kind,
            gpu_count=gpu.count,
            state="waiting",
            joined_at=utcnow(),
            held_devices="",
        )
        s.add(entry)
        s.flush()
        log.info("%s joined the waitlist for %s (entry %d)", user, course.id, entry.id)
    return entry


def take_offer(s, entry):
    """The learner takes the devices held for them: the entry is done and the devices free for their admission."""
    entry.state, entry.ended_at, entry.held_devices = "admitted", utcnow(), ""
    s.flush()


def leave(s, user, course_id=None, entry_id=None, why="left"):
    """End ``user``'s live entries (for ``course_id``, or the one ``entry_id``). Returns how many."""
    q = select(WaitlistEntry).where(WaitlistEntry.user == user, WaitlistEntry.state.in_(LIVE))
    if course_id is not None:
        q = q.where(WaitlistEntry.course_id == course_id)
    if entry_id is not None:
        q = q.where(WaitlistEntry.id == entry_id)
    n = 0
    for entry in s.scalars(q):
        entry.state, entry.ended_at, entry.held_devices = why, utcnow(), ""
        n += 1
    return n


def _gpus_by_course(s):
    held = {}
    for course_id, count in s.execute(
        select(SandboxSession.course_id, SandboxSession.gpu_count).where(
            SandboxSession.state == "active", SandboxSession.gpu_count > 0
        )
    ):
        held[course_id] = held.get(course_id, 0) + count
    for e in s.scalars(select(WaitlistEntry).where(WaitlistEntry.state == "offered")):
        held[e.course_id] = held.get(e.course_id, 0) + e.gpu_count
    return held


def promote(s, inventory, hold_s, now=None):
    """Expire stale offers, then offer free devices to those next in line. Returns ``[(entry id, user, course)]``
    offered now."""
    now = now or utcnow()
    for e in s.scalars(select(WaitlistEntry).where(WaitlistEntry.state == "offered", WaitlistEntry.expires_at <= now)):
        log.info(
            "The GPU held for %s (%s) was not taken within %d s: it goes to the next in line",
            e.user,
            e.course_id,
            hold_s,
        )
        e.state, e.ended_at, e.held_devices = "expired", now, ""
    s.flush()
    waiting = list(s.scalars(select(WaitlistEntry).where(WaitlistEntry.state == "waiting")))
    if not waiting:
        return []
    taken = sessions.claimed_devices(s, now)
    free = [d for d in inventory if d.id not in taken]
    offered = []
    shares = any(getattr(d, "one_course", False) for d in free)  # time-slice/MPS: one course per GPU
    for entry in service_order(waiting, _gpus_by_course(s)):
        foreign = sessions.foreign_gpus(s, inventory, entry.course_id) if shares else set()
        fits = [
            d for d in free if d.matches(entry.gpu_kind) and not (getattr(d, "one_course", False) and d.gpu in foreign)
        ][: entry.gpu_count]
        if len(fits) < entry.gpu_count:
            continue  # a later entry of another kind (or needing fewer) may still fit
        entry.state, entry.offered_at = "offered", now
        entry.expires_at = now + timedelta(seconds=hold_s)
        entry.held_devices = ",".join(d.id for d in fits)
        free = [d for d in free if d not in fits]
        offered.append((entry.id, entry.user, entry.course_id))
    s.flush()
    return offered


def _session_ends(s, catalog, inventory, default_session_s, now):
    """Seconds from now until each device of the pool is free (0 for a free one)."""
    ends = {d.id: 0.0 for d in inventory}
    claimed = {}
    for session in s.scalars(
        select(SandboxSession).where(SandboxSession.state == "active", SandboxSession.gpu_count > 0)
    ):
        course = catalog.get(session.course_id)
        length = session.max_session_s or default_session_s
        left = max(0.0, length - (now - session.started_at).total_seconds())
        if course is not None:  # a learner quota may end it sooner
            rate, _cpu = rates_per_s(rate_ppm(s, session.gpu_kind, now), session.gpu_count, session.cpu_millis)
            for lim in limits_for(s, course, session.user, now):
                if lim.unit == "gpu" and rate > 0:
                    left = min(left, max(0.0, (lim.limit_ms - lim.used_ms) / rate))
        for device in session.devices:
            claimed[device] = left
    for e in s.scalars(select(WaitlistEntry).where(WaitlistEntry.state == "offered")):
        for device in e.devices:  # held for someone about to start: busy for their session
            course = catalog.get(e.course_id)
            claimed[device] = (course.sandbox.max_session_seconds if course else None) or default_session_s
    ends.update({d: t for d, t in claimed.items() if d in ends})
    return ends


def status(s, catalog, inventory, default_session_s, entry_ids=None):
    """``{entry id: {state, position, estimate_s, ...}}`` of live entries (those in ``entry_ids``, or all)."""
    now = utcnow()
    live = list(s.scalars(select(WaitlistEntry).where(WaitlistEntry.state.in_(LIVE)).order_by(WaitlistEntry.id)))
    waiting = [e for e in live if e.state == "waiting"]
    order = service_order(waiting, _gpus_by_course(s))
    ends = _session_ends(s, catalog, inventory, default_session_s, now)

    def session_s(entry):
        course = catalog.get(entry.course_id)
        return (course.sandbox.max_session_seconds if course else None) or default_session_s

    out = {}
    kinds = sorted({e.gpu_kind for e in waiting})
    for kind in kinds:  # each kind's line is played forward on the devices it can use
        line = [e for e in order if e.gpu_kind == kind]
        free_at = [t for d, t in ends.items() if next(x for x in inventory if x.id == d).matches(kind)]
        eta = estimates(line, free_at, session_s)
        for place, e in enumerate(line, 1):
            out[e.id] = _describe(e, place, eta[e.id])
    for e in live:
        if e.state == "offered":
            out[e.id] = _describe(e, 0, 0) | {
                "devices": e.devices,
                "hold_expires_at": e.expires_at.isoformat(),
                "hold_s": max(0, round((e.expires_at - now).total_seconds())),
            }
    return {k: v for k, v in out.items() if entry_ids is None or k in entry_ids}


def _describe(e, position, estimate):
    return {
        "id": e.id,
        "user": e.user,
        "server_name": e.server_name,
        "course": e.course_id,
        "state": e.state,
        "gpu_kind": e.gpu_kind,
        "gpu_count": e.gpu_count,
        "position": position,
        "estimate_s": None if estimate is None else round(estimate),
        "joined_at": e.joined_at.isoformat(),
    }


def entry_state(s, entry_id):
    e = s.get(WaitlistEntry, entry_id)
    return None if e is None else e.state


# -- the service's side -----------------------------------------------------------


class Waitlist:
    """The waitlist of the local GPU pool, and the wake-ups of the spawns waiting in it."""

    def __init__(self, db, courses, inventory, default_session_s, hold_s=180):
        self.db = db
        self.courses = courses
        self.inventory = inventory
        self.default_session_s = default_session_s
        self.hold_s = hold_s
        self._changed = asyncio.Event()

    def _notify(self):
        self._changed.set()
        self._changed = asyncio.Event()

    async def promote(self):
        """Offer free devices to the next in line (after a release, a leave, an expiry); wakes the waiting spawns."""
        if not self.inventory:
            return []
        offered = await self.db.run(promote, self.inventory, self.hold_s)
        for entry_id, user, course_id in offered:
            log.info("A GPU is held for %s (%s, waitlist entry %d) for %d s", user, course_id, entry_id, self.hold_s)
        if offered:
            self._notify()
        return offered

    async def status(self, entry_ids=None):
        return await self.db.run(status, self.courses.catalog, self.inventory or [], self.default_session_s, entry_ids)

    async def wait(self, entry_id, timeout):
        """The entry's status once it changes state, or after ``timeout`` seconds (None when it is unknown)."""
        before = await self.db.run(entry_state, entry_id)
        deadline = asyncio.get_running_loop().time() + timeout
        while before in LIVE:
            changed = self._changed
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(changed.wait(), left)
            except asyncio.TimeoutError:
                break
            if await self.db.run(entry_state, entry_id) != before:
                break
        found = await self.status([entry_id])
        if entry_id in found:
            return found[entry_id]
        state = await self.db.run(entry_state, entry_id)
        return None if state is None else {"id": entry_id, "state": state}

    async def leave(self, user, course_id=None, entry_id=None, why="left"):
        n = await self.db.run(leave, user, course_id, entry_id, why)
        if n:
            log.info("%s left the waitlist%s", user, f" for {course_id}" if course_id else "")
            self._notify()
            await self.promote()
        return n

    async def of_user(self, user):
        """``{course id: status}`` of ``user``'s live entries."""
        return {v["course"]: v for v in (await self.status()).values() if v["user"] == user}

    async def run(self, every=1.0):
        """Expire offers and promote, every ``every`` seconds (releases promote at once; this catches the rest:
        sessions settled by reconciliation, offers nobody took)."""
        while True:
            try:
                await self.promote()
            except Exception:
                log.exception("waitlist promotion failed")
            await asyncio.sleep(every)
