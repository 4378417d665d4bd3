"""The ledger as Slurm's association tree, and the ``sacctmgr`` commands that make Slurm's match it.

Pure functions (no Slurm, no database): :func:`desired` builds the tree from the ledger's facts,
:func:`parse_associations` reads ``sacctmgr -P show assoc``, :func:`plan` compares the two.

The tree (docs/slurm.md)::

    allocation account  (GrpTRESMins=gres/gpu=<granted GPU-minutes>; closed: GrpSubmitJobs=0)
      course account    (GrpTRESMins=gres/gpu=<course budget in GPU-minutes>, or none)
        learner user    (GrpTRESMins=gres/gpu=<the learner's quota in GPU-minutes>, or none)

Only accounts aifhub owns are changed: the allocations' and the courses' (the description says
``aifhub``); users leave a course's account when they are no longer its learners or staff. Slurm's
limits count Slurm's own usage since its last reset (PriorityUsageResetPeriod); aifhub's ledger stays
the authority for windows (a weekly quota) and for usage outside Slurm.
"""

import re
import shlex
from dataclasses import dataclass, field

from ..hubside.slurm.jobspec import slurm_account

NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,63}$")
NO_LIMIT = "-1"


@dataclass
class Account:
    name: str
    parent: str
    gpu_minutes: int | None  # GrpTRESMins gres/gpu; None: no limit
    closed: bool = False
    description: str = "aifhub"


@dataclass
class Tree:
    accounts: dict = field(default_factory=dict)  # name -> Account
    users: dict = field(default_factory=dict)  # (account, user) -> gpu minutes or None
    skipped: list = field(default_factory=list)  # (hub user, why) without a site account


def _minutes(hours):
    return None if hours is None else max(0, round(float(hours) * 60))


def desired(courses, allocations, members, site_account):
    """The tree for ``courses`` (catalog Course objects), ``allocations`` (``{id: {"gpu_hours", "closed"}}``),
    ``members`` (``{course id: set of hub users}``: learners and staff) and ``site_account(hub user)`` (the Unix
    name, or None when the user has none yet)."""
    tree = Tree()
    for alloc_id, alloc in sorted(allocations.items()):
        name = slurm_account(alloc_id)
        tree.accounts[name] = Account(name, "root", _minutes(alloc.get("gpu_hours")), bool(alloc.get("closed")))
    for course in sorted(courses, key=lambda c: c.id):
        if not course.allocation:
            continue
        parent = slurm_account(course.allocation)
        if parent not in tree.accounts:
            tree.accounts[parent] = Account(parent, "root", None)
        account = slurm_account(course.id)
        tree.accounts[account] = Account(account, parent, _minutes((course.budget or {}).get("gpu_hours")))
        quota = course.quota.gpu_hours if course.quota is not None else None
        for user in sorted(members.get(course.id, ())):
            unix = site_account(user)
            if unix is None or not NAME.match(unix):
                tree.skipped.append((user, "no site account yet" if unix is None else f"unusable name {unix!r}"))
                continue
            tree.users[(account, unix)] = _minutes(quota)
    return tree


def parse_associations(text):
    """``sacctmgr -n -P show assoc format=account,user,parentname,grptresmins,grpsubmit`` -> (accounts, users):
    ``{account: (parent, gpu minutes or None, closed)}`` and ``{(account, user): gpu minutes or None}``."""
    accounts, users = {}, {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        account, user, parent, tres = parts[:4]
        submit = parts[4] if len(parts) > 4 else ""
        minutes = None
        for item in tres.split(","):
            key, _, value = item.partition("=")
            if key == "gres/gpu" and value.isdigit():
                minutes = int(value)
        if user:
            users[(account, user)] = minutes
        else:
            accounts[account] = (parent, minutes, submit == "0")
    return accounts, users


def _limit(minutes):
    return f"GrpTRESMins=gres/gpu={NO_LIMIT if minutes is None else minutes}"


def plan(tree, accounts, users, cluster):
    """The ``sacctmgr`` commands (argument lists, without ``-i``) that make Slurm's tree ``tree``: accounts
    first (parents before children), then users; removals last (users before accounts are never removed)."""
    commands = []
    ordered = sorted(tree.accounts.values(), key=lambda a: (a.parent != "root", a.name))
    for a in ordered:
        found = accounts.get(a.name)
        if found is None:
            commands.append(
                ["add", "account", a.name, f"cluster={cluster}", f"parent={a.parent}", f"description={a.description}",
                 f"organization={a.parent if a.parent != 'root' else a.name}"]
            )  # fmt: skip
            found = (a.parent, None, False)
        if found[0] != a.parent:
            commands.append(["modify", "account", a.name, "set", f"parent={a.parent}"])
        if found[1] != a.gpu_minutes:
            commands.append(["modify", "account", a.name, "set", _limit(a.gpu_minutes)])
        if found[2] != a.closed:
            commands.append(["modify", "account", a.name, "set", f"GrpSubmitJobs={0 if a.closed else NO_LIMIT}"])
    for (account, user), minutes in sorted(tree.users.items()):
        if (account, user) not in users:
            commands.append(["add", "user", user, f"account={account}", f"cluster={cluster}"])
            if minutes is not None:
                commands.append(["modify", "user", user, "where", f"account={account}", "set", _limit(minutes)])
        elif users[(account, user)] != minutes:
            commands.append(["modify", "user", user, "where", f"account={account}", "set", _limit(minutes)])
    course_accounts = {a.name for a in tree.accounts.values() if a.parent != "root"}
    for account, user in sorted(users):
        if account in course_accounts and (account, user) not in tree.users:
            commands.append(["delete", "user", user, "where", f"account={account}", f"cluster={cluster}"])
    return commands


def as_shell(commands):
    """The commands as ``sacctmgr -i ...`` lines (what ``--dry-run`` and ``usage report --format slurm`` print)."""
    return [shlex.join(["sacctmgr", "-i", *c]) for c in commands]
