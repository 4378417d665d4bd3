"""One control group per local grading job (root only): its memory and process limits hold for the job
as a whole.

``RLIMIT_DATA`` and ``RLIMIT_NPROC`` are per process and per uid: three children of one kernel held
three times the "memory limit". The worker makes a group for each job (cgroup v2 or v1, through
:mod:`aifhub.isolation.cgroups`, as sandboxes have) with ``memory_bytes`` (no swap beyond it) and
``processes`` as its limits; the kernel launcher moves itself into it before it starts the kernel,
so every kernel of the job and all they start are counted together. At the end of the job the
group is emptied (SIGKILL) and removed. Groups left by a worker that died mid-job are removed by
the next worker that makes one.
"""

import logging

from ...isolation.cgroups import CgroupError, Cgroups, Limits, group_prefix

log = logging.getLogger("aifhub.grading.runners.jobgroup")
_cgroups = None  # the detected set-up, once per worker (False: none usable here)


def _setup(scratch_root):
    global _cgroups
    if _cgroups is None:
        try:
            groups = Cgroups.detect()
            groups.prepare()
            groups.sweep(prefix(scratch_root))
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
        return groups.create(
            f"{prefix(scratch.parent)}{scratch.name}", Limits(memory_bytes=memory_bytes, pids=processes)
        )
    except OSError as exc:
        log.warning("Grading job %s runs without its memory cgroup: %s", scratch.name, exc)
        return None
