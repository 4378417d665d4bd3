"""``aifhub slurm sync``: read the ledger's facts, ask Slurm for its tree, run (or print) the difference.

One unit of work reads the ledger (allocations, enrolments, learners' uids); Slurm is read and changed
with ``sacctmgr`` (Slurm's own client: the machine needs slurm-client and SLURM_CONF, and an operator
or administrator of Slurm's accounting runs it).
"""

import pwd
import subprocess

from sqlalchemy import select

from ..ledger.models import Allocation, Enrollment, LearnerUid
from . import tree as slurm_tree

ASSOC_FORMAT = "format=account,user,parentname,grptresmins,grpsubmit"


class SlurmCommandError(RuntimeError):
    """A Slurm command failed: the message has its words."""


def ledger_facts(s):
    """``(allocations, enrolments, uids)`` from the state database (session ``s``)."""
    allocations = {
        a.id: {"gpu_hours": a.granted_gpu_ms / 3_600_000, "closed": a.status == "closed"}
        for a in s.scalars(select(Allocation))
    }
    enrolled = {}
    for e in s.scalars(select(Enrollment)):
        enrolled.setdefault(e.course_id, set()).add(e.user)
    uids = {row.user: row.uid for row in s.scalars(select(LearnerUid))}
    return allocations, enrolled, uids


def members(courses, enrolled):
    """Who may run sandboxes of each course: its enrolled learners, its roster and its instructors."""
    return {c.id: set(enrolled.get(c.id, ())) | set(c.roster) | set(c.instructors) for c in courses}


def site_resolver(uids, template="", accounts=None):
    """hub user -> Unix account name (as the Slurm spawner resolves it), or None."""
    accounts = accounts or {}

    def resolve(user):
        if user in accounts:
            return accounts[user]
        if template:
            return template.format(username=user)
        uid = uids.get(user)
        if uid is None:
            return None
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None

    return resolve


def sacctmgr(args, env=None, check=True):
    out = subprocess.run(["sacctmgr", *args], capture_output=True, text=True, env=env, timeout=60)
    if check and out.returncode:
        raise SlurmCommandError(f"sacctmgr {' '.join(args)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def current(cluster, env=None):
    text = sacctmgr(["-n", "-P", "show", "assoc", f"cluster={cluster}", ASSOC_FORMAT], env)
    return slurm_tree.parse_associations(text)


def apply(commands, env=None):
    """Run ``commands`` (from :func:`tree.plan`); returns the lines run."""
    done = []
    for command in commands:
        sacctmgr(["-i", *command], env)
        done.append(slurm_tree.as_shell([command])[0])
    return done
