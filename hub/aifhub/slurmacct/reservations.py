"""A course's scheduled sessions (``sessions:`` in course.yaml) as Slurm reservations, made ahead by
``aifhub slurm sync --reservations`` (docs/slurm.md).

Each session that has not ended gets ``aifhub-<course>-<start, UTC, YYYYMMDDTHHMM>``: from its start to
its end, for the course's account, on as many whole nodes as its expected learners need (Slurm 22.05
reserves nodes or CPUs, not GPUs: ``TRES=gres/gpu`` is refused). The spawner sends a learner's job of that
course into the reservation while the session runs (``SlurmSpawner.session_reservations``). Reservations
named ``aifhub-<course>-...`` that no session asks for any more are deleted; others are never touched.
"""

import math
import re
from datetime import datetime, timezone

from ..hubside.slurm.jobspec import slurm_account

PREFIX = "aifhub-"
FIELD = re.compile(r"(\w+)=(\S*)")


def reservation_name(course_id, start):
    """The reservation of a session of ``course_id`` starting at ``start`` (an aware datetime)."""
    return f"{PREFIX}{slurm_account(course_id)}-{start.astimezone(timezone.utc):%Y%m%dT%H%M}"


def _slurm_time(moment):
    """An aware datetime as Slurm reads it: the local time of the machine running scontrol, no zone."""
    return moment.astimezone().replace(tzinfo=None).isoformat(timespec="seconds")


def desired(courses, per_node, partition=None, now=None):
    """``{name: {"start", "end", "account", "nodes"}}`` for every course session not ended yet.
    ``per_node``: ``(gpus, cpus)`` of one node of the partition."""
    now = now or datetime.now(timezone.utc)
    gpus_per_node, cpus_per_node = per_node
    wanted = {}
    for course in courses:
        for session in course.sessions:
            if session.end <= now:
                continue
            gpu = course.sandbox.gpu
            if gpu is not None and gpus_per_node:
                nodes = math.ceil(session.expected * gpu.count / gpus_per_node)
            else:
                nodes = math.ceil(session.expected * (course.sandbox.cpu or 1) / max(1, cpus_per_node))
            wanted[reservation_name(course.id, session.start)] = {
                "start": session.start,
                "end": session.end,
                "account": slurm_account(course.id),
                "nodes": max(1, nodes),
                "partition": (course.slurm.partition if course.slurm else None) or partition,
            }
    return wanted


def parse(text):
    """``scontrol -o show reservation`` -> ``{name: fields}`` of aifhub's reservations."""
    found = {}
    for line in text.splitlines():
        fields = dict(FIELD.findall(line))
        name = fields.get("ReservationName", "")
        if name.startswith(PREFIX):
            found[name] = fields
    return found


def plan(wanted, found):
    """``scontrol`` commands (argument lists): create what is missing, delete what no session asks for."""
    commands = []
    for name, r in sorted(wanted.items()):
        if name in found:
            continue
        command = [
            "create",
            "reservation",
            f"ReservationName={name}",
            f"StartTime={_slurm_time(r['start'])}",
            f"EndTime={_slurm_time(r['end'])}",
            f"Accounts={r['account']}",
            f"NodeCnt={r['nodes']}",
        ]
        if r.get("partition"):
            command.append(f"PartitionName={r['partition']}")
        commands.append(command)
    for name in sorted(set(found) - set(wanted)):
        commands.append(["delete", f"ReservationName={name}"])
    return commands


def current(sessions, course_id, now=None):
    """The reservation of the session of ``course_id`` running at ``now`` (sessions as the course summary gives
    them: ISO ``start`` and ``end``), or None."""
    now = now or datetime.now(timezone.utc)
    for s in sessions or ():
        start, end = datetime.fromisoformat(s["start"]), datetime.fromisoformat(s["end"])
        if start <= now < end:
            return reservation_name(course_id, start)
    return None
