"""A synthetic day of GPU sandboxes, driven by recorded NVML samples through the ledger, the GPU telemetry and the
idle rule: GPU-aware culling against activity-only culling, in the same run.

Thirty learners hold time-slice shares of 8 GPUs (4 shares each) in one course whose idle rule is
``idle: {after: 30m, grace: 5m}``:

- 10 **busy**: they start a training run from a terminal in the first minutes, then leave it running (their GPU
  computes all day; the hub sees no activity after 5 minutes);
- 10 **idle holding GPU memory**: they load a model (GPU busy for 10 minutes), keep reading in JupyterLab for an
  hour (activity), then walk away; the model's 30 GiB stay on the GPU;
- 10 **idle after activity**: they work (GPU and activity) for two hours, then walk away.

Every minute of the day, as the service would: the hub's list of running servers and their last activity, a
metering tick (charges), a GPU sample (the recording's next minute: the learners' processes by uid, each with its SM
share and memory) and the idle pass. Two databases, one per policy: the idle rule fed by the GPU telemetry's
``gpu_busy(session)``, and the idle rule fed by activity alone. Figures: GPU-hours billed, GPU-hours billed while
the learner's GPU was idle (from the recording, against each session's charged stretch), busy sandboxes stopped,
and the notice each stopped sandbox got.
"""

import asyncio
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from aifhub.catalog.model import Course, GpuRequest, IdleRule, SandboxRequest, Schedule
from aifhub.gpus.kinds import parse_kinds
from aifhub.gpus.nvml import DeviceUse, Physical, ProcessUse, Sample
from aifhub.ledger import admission as ledger_admission
from aifhub.ledger import allocations, metering
from aifhub.ledger.balances import record_rates
from aifhub.ledger.models import SandboxSession
from aifhub.ledger.units import ms_to_hours
from aifhub.service import idle
from aifhub.service.gpu_pool import expand
from aifhub.service.gpu_use import GpuUse
from aifhub.state.db import Database, sqlite_url

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)
GiB = 2**30
GPUS = 8
KIND = {"name": "h100-ts4", "sharing": "timeslice", "replicas": 4}
GOAL_IDLE_SHARE = 0.10
GOAL_NOTICE_S = 120


@dataclass(frozen=True)
class Learner:
    name: str
    group: str  # busy | holding | after

    def gpu(self, minute):
        """(SM percent, GPU memory) of this learner's processes at ``minute`` of the day."""
        if self.group == "busy":
            return (70 + minute % 20, 24 * GiB) if minute >= 3 else (0, 0)
        if self.group == "holding":
            return (60, 30 * GiB) if minute < 10 else (0, 30 * GiB)
        return (55, 16 * GiB) if minute < 120 else (0, 0)

    def active_until(self):
        """The last minute the hub saw activity of this learner (kernel, terminal, requests)."""
        return {"busy": 5, "holding": 60, "after": 120}[self.group]


def learners(n_each=10):
    return [Learner(f"{g}-{i:02d}", g) for g in ("busy", "holding", "after") for i in range(n_each)]


def course():
    return Course(
        id="gpu-day",
        title="GPU day",
        kind="workshop",
        enrollment="open",
        instructors=("teacher",),
        sandbox=SandboxRequest(image="pytorch-cuda", gpu=GpuRequest("h100-ts4", 1), cpu=2, memory="16G"),
        path=Path("."),
        schedule=Schedule(start=date(2026, 11, 1)),
        allocation="DAY",
        idle=IdleRule(after_s=30 * 60, grace_s=5 * 60),
    )


class Catalog:
    def __init__(self, c):
        self.courses = {c.id: c}

    def get(self, course_id):
        return self.courses.get(course_id)


class DayRecording:
    """The NVML reader of the day: minute ``m``'s sample has each running learner's process on their GPU."""

    def __init__(self, physical, placed):
        self.physical = physical
        self.placed = placed  # uid -> (learner, gpu index)
        self.minute = 0

    def discover(self):
        return list(self.physical)

    def sample(self):
        per_gpu = {}
        for uid, (learner, gpu) in self.placed.items():
            sm, mem = learner.gpu(self.minute)
            if mem:
                per_gpu.setdefault(gpu, []).append(
                    ProcessUse(pid=10_000 + uid % 10_000, uid=uid, sm=sm, memory_used=mem)
                )
        return Sample(
            {
                str(g): DeviceUse(
                    util=min(100, sum(p.sm for p in procs)),
                    memory_used=sum(p.memory_used for p in procs),
                    memory_total=80 * GiB,
                    processes=tuple(procs),
                )
                for g, procs in per_gpu.items()
            }
        )


async def one_day(folder, gpu_aware, hours=8.0, step_s=60):
    """One policy over the day; returns its figures."""
    db = Database(sqlite_url(Path(folder) / f"day-{'gpu' if gpu_aware else 'activity'}.sqlite"))
    try:
        kinds = parse_kinds([KIND])
        physical = [
            Physical(index=i, name="NVIDIA H100 80GB HBM3", minor=i, memory_total=80 * GiB) for i in range(GPUS)
        ]
        inventory = expand(physical, kinds)
        c = course()
        catalog = Catalog(c)
        people = learners()

        def start(s):
            allocations.create(s, "DAY", 10_000, title="bench")
            record_rates(s, {k.name: k.weight_ppm for k in kinds.values()}, T0 - timedelta(days=1))

        await db.run(start)
        placed, sessions = {}, {}
        for p in people:
            adm = await db.run(ledger_admission.admit, c, p.name, "", inventory, 200_000, now=T0)
            placed[adm.uid] = (p, int(adm.devices[0]["gpu"]))
            sessions[p.name] = adm.session_id
        reader = DayRecording(physical, placed)
        use = GpuUse(db, inventory, reader=reader, interval_s=step_s)
        running = {(p.name, "") for p in people}
        warned, stopped, gpu_idle_flags = {}, {}, {p.name: [] for p in people}
        steps = int(hours * 3600 / step_s)
        for step in range(1, steps + 1):
            now = T0 + timedelta(seconds=step * step_s)
            minute = int(step * step_s / 60)
            reader.minute = minute
            activity = {
                (p.name, ""): T0 + timedelta(minutes=min(minute, p.active_until()))
                for p in people
                if (p.name, "") in running
            }
            await db.run(metering.tick, running, now, catalog, now=now)
            await use.sample(now=now)
            for p in people:
                sm, _mem = p.gpu(minute)
                gpu_idle_flags[p.name].append((now, sm <= 5))
            busy = use.gpu_busy if gpu_aware else frozenset()
            warnings, stops = await db.run(idle.idle_pass, catalog, activity, now, busy)
            for user, _server, _msg in warnings:
                warned.setdefault(user, now)
            for user, server, _reason in stops:
                stopped[user] = now
                running.discard((user, server))
        end = T0 + timedelta(seconds=steps * step_s)
        await db.run(metering.tick, running, end, catalog, now=end)
        for user, server in sorted(running):
            await db.run(metering.release, user, server, "end of the day", now=end)
        for user in stopped:
            await db.run(metering.release, user, "", "stopped", now=stopped[user])

        def read(s):
            return {
                x.user: (x.charged_gpu_ms, x.charge_until, x.started_at, x.gpu_idle_ms) for x in s.query(SandboxSession)
            }

        rows = await db.run(read)
        weight = kinds["h100-ts4"].weight
        billed_ms = sum(r[0] for r in rows.values())
        idle_billed_ms = 0
        for user, (_charged, charge_until, _started, _idle_ms) in rows.items():
            until = charge_until or stopped.get(user) or end
            idle_billed_ms += sum(step_s * 1000 for at, is_idle in gpu_idle_flags[user] if is_idle and at <= until)
        idle_billed_ms = int(idle_billed_ms * weight)
        notices = [(stopped[u] - warned[u]).total_seconds() if u in warned else 0.0 for u in stopped]
        return {
            "policy": "GPU-aware" if gpu_aware else "activity only",
            "billed_gpu_h": ms_to_hours(billed_ms),
            "idle_billed_gpu_h": ms_to_hours(idle_billed_ms),
            "idle_share": idle_billed_ms / billed_ms if billed_ms else 0.0,
            "busy_stopped": sum(1 for u in stopped if u.startswith("busy")),
            "idle_stopped": sum(1 for u in stopped if not u.startswith("busy")),
            "min_notice_s": min(notices) if notices else None,
            "telemetry_idle_h": ms_to_hours(sum(r[3] for r in rows.values())),
            "hours": hours,
            "learners": len(people),
        }
    finally:
        db.close()


def gpu_day(hours=8.0, step_s=60, folder=None):
    """Both policies over the same recorded day; ``{"aware": figures, "activity": figures}``."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        return {
            "aware": asyncio.run(one_day(tmp, True, hours, step_s)),
            "activity": asyncio.run(one_day(tmp, False, hours, step_s)),
        }
