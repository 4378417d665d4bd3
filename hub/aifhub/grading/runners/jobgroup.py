"""One control group per local grading job (root only): its memory and process limits hold for the job
as a whole.

``RLIMIT_DATA`` and ``RLIMIT_NPROC`` are per process and per uid: three children of one kernel held
three times the "memory limit". The worker makes a group for each job (cgroup v2 or v1, through
:mod:`aifhub.isolation.cgroups`, as sandboxes have) with ``memory_bytes`` (no swap beyond it) and
``processes`` as its limits, and the CPU weight graded code had in the hub's own group (``HUB_CPU_WEIGHT``:
a cell's timeouts of seconds hold while learners' sandboxes keep the cores busy); the kernel launcher moves itself into it before it starts the kernel,
so every kernel of the job and all they start are counted together. At the end of the job the
group is emptied (SIGKILL) and removed; when the worker died mid-job, the service removes it
(:func:`remove`, from the queue's clean-up). Groups are never swept by name: a sibling worker's group
is empty between its creation and its kernel's start.
"""

import logging

from ...isolation.cgroups import HUB_CPU_WEIGHT, CgroupError, Cgroups, Limits, group_prefix

log = logging.getLogger("aifhub.grading.runners.jobgroup")
_cgroups = None  # the detected set-up, once per worker (False: none usable here)


def _setup(scratch_root):
    global _cgroups
    if _cgroups is None:
        try:
            groups = Cgroups.detect()
            groups.prepare()
        except (CgroupError, OSError) as exc:
            log.warning("Grading jobs' memory and process limits hold per process only: %s", exc)
            groups = False
        _cgroups = groups
    return _cgroups or None


def prefix(scratch_root):
    """The prefix of the groups of the jobs whose scratch folders are in ``scratch_root``."""
    return f"{group_prefix(scratch_root)}grade-"


def create(scratch, memory_bytes, processes):
    """The group of the job whose scratch folder is ``scratch`` (a ``Path``), or None where control groups
    cannot be used (then the per-process limits alone hold, as the log says once)."""
    groups = _setup(scratch.parent)
    if groups is None:
        return None
    try:
        limits = Limits(memory_bytes=memory_bytes, pids=processes, cpu_weight=HUB_CPU_WEIGHT)
        return groups.create(f"{prefix(scratch.parent)}{scratch.name}", limits)
    except OSError as exc:
        log.warning("Grading job %s runs without its memory cgroup: %s", scratch.name, exc)
        return None


def remove(scratch):
    """Kill what is left in the group of the job whose scratch folder is ``scratch`` and remove it (after its
    worker died under it); nothing when it has none."""
    try:
        groups = Cgroups.detect()
    except CgroupError:
        return
    group = groups.existing(groups.group(f"{prefix(scratch.parent)}{scratch.name}").paths)
    if group is not None:
        group.remove()
