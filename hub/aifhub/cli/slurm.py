"""``aifhub slurm sync [--dry-run]``: Slurm's association tree made to match the ledger (docs/slurm.md)."""

import os

from ..slurmacct import tree as slurm_tree
from .common import CLIError, state_options


def register(sub):
    slurm = sub.add_parser("slurm", help="Slurm's accounting kept in step with the ledger (docs/slurm.md)")
    ssub = slurm.add_subparsers(dest="slurm_cmd", required=True, metavar="COMMAND")
    p = ssub.add_parser(
        "sync",
        parents=[state_options(), slurm_options()],
        help="create or update the associations allocation -> course -> learner, with the grant, the course budget "
        "and the learner quota as GrpTRESMins on GPUs; learners no longer in a course lose its association",
    )
    p.add_argument("--dry-run", action="store_true", help="print the sacctmgr commands, change nothing")
    p.add_argument(
        "--reservations",
        action="store_true",
        help="also make a Slurm reservation for each course session (sessions: in course.yaml) not ended yet, "
        "and delete aifhub's reservations that no session asks for any more",
    )
    p.add_argument(
        "--partition",
        default=os.environ.get("AIFHUB_SLURM_PARTITION", ""),
        help="partition of the reservations of courses that name none (default: $AIFHUB_SLURM_PARTITION)",
    )
    p.set_defaults(func=sync)
    p = ssub.add_parser(
        "usage",
        parents=[state_options(), slurm_options()],
        help="record ended Slurm jobs' GPU and CPU time from sacct in the ledger, once per job id, make each "
        "session's charge Slurm's figure (as the service does while it runs), and show each beside the ledger's "
        "charge of its session",
    )
    p.add_argument("--since", default="now-30days", help="sacct's --starttime (default: now-30days)")
    p.add_argument("--dry-run", action="store_true", help="show what would be recorded, record nothing")
    p.set_defaults(func=usage)


def slurm_options():
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--cluster",
        default=os.environ.get("AIFHUB_SLURM_CLUSTER", ""),
        help="Slurm's cluster name (default: $AIFHUB_SLURM_CLUSTER)",
    )
    p.add_argument(
        "--site-account-template",
        default="",
        help="Unix account of a hub user on the cluster, e.g. '{username}'; default: the account of the learner's "
        "per-learner uid (as the Slurm spawner's default)",
    )
    return p


def desired_tree(args):
    """The tree the ledger asks for (reads the local state and the course folders)."""
    from ..slurmacct import sync as slurm_sync
    from .courses import _local_catalog
    from .localstate import _local

    catalog = _local_catalog(args)
    allocations, enrolled, uids = _local(args, slurm_sync.ledger_facts)
    courses = list(catalog.courses.values())
    return slurm_tree.desired(
        courses,
        allocations,
        slurm_sync.members(courses, enrolled),
        slurm_sync.site_resolver(uids, args.site_account_template),
    )


def _cluster(args):
    if not args.cluster:
        raise CLIError(
            "name Slurm's cluster: --cluster NAME or $AIFHUB_SLURM_CLUSTER (slurm.conf ClusterName)", status=2
        )
    return args.cluster


def sync(args):
    from ..slurmacct import sync as slurm_sync

    cluster = _cluster(args)
    tree = desired_tree(args)
    try:
        accounts, users = slurm_sync.current(cluster)
        commands = slurm_tree.plan(tree, accounts, users, cluster)
        lines = slurm_tree.as_shell(commands) if args.dry_run else slurm_sync.apply(commands)
    except (slurm_sync.SlurmCommandError, OSError) as exc:
        raise CLIError(str(exc))
    if args.reservations:
        lines += session_reservations(args, cluster)
    for line in lines:
        print(line)
    for user, why in tree.skipped:
        print(f"# skipped {user}: {why}")
    verb = "would run" if args.dry_run else "ran"
    print(
        f"# {verb} {len(lines)} sacctmgr command(s); Slurm's tree {'differs from' if args.dry_run and lines else 'matches'} the ledger"
    )
    return 0


def session_reservations(args, cluster):
    """Reservations for the courses' sessions: the scontrol lines run (or, with --dry-run, to run)."""
    import shlex
    import subprocess

    from ..slurmacct import reservations
    from .courses import _local_catalog

    def scontrol(*command):
        out = subprocess.run(["scontrol", *command], capture_output=True, text=True, timeout=60)
        if out.returncode:
            raise CLIError(f"scontrol {' '.join(command[:2])}: {(out.stderr or out.stdout).strip()}")
        return out.stdout

    sinfo = ["sinfo", "-h", "-o", "%c|%G", *(["-p", args.partition] if args.partition else [])]
    first = (subprocess.run(sinfo, capture_output=True, text=True, timeout=60).stdout.splitlines() or ["1|"])[0]
    cpus, gres = first.split("|", 1)
    gpus = max((int(g.split("(")[0].rsplit(":", 1)[-1]) for g in gres.split(",") if g.startswith("gpu")), default=0)
    courses = list(_local_catalog(args).courses.values())
    wanted = reservations.desired(courses, (gpus, int(cpus or 1)), args.partition or None)
    commands = reservations.plan(wanted, reservations.parse(scontrol("-o", "show", "reservation")))
    lines = []
    for command in commands:
        if not args.dry_run:
            scontrol(*command)
        lines.append(shlex.join(["scontrol", *command]))
    return lines


def report_lines(args):
    """``aifhub usage report --format slurm``: every command that builds the ledger's tree in an empty Slurm."""
    cluster = getattr(args, "cluster", "") or os.environ.get("AIFHUB_SLURM_CLUSTER", "") or "CLUSTER"
    args.cluster = cluster
    args.site_account_template = getattr(args, "site_account_template", "")
    tree = desired_tree(args)
    lines = slurm_tree.as_shell(slurm_tree.plan(tree, {}, {}, cluster))
    return lines + [f"# skipped {user}: {why}" for user, why in tree.skipped]


def usage(args):
    from ..slurmacct import usage as slurm_usage
    from .localstate import ServiceRunning, _local

    cluster = _cluster(args)
    try:
        jobs = slurm_usage.sacct(args.since)
    except (RuntimeError, OSError) as exc:
        raise CLIError(str(exc))

    def unit(s):
        new = slurm_usage.record(s, cluster, jobs)
        rows = slurm_usage.reconcile(s, cluster)
        if args.dry_run:
            s.rollback()
        return new, rows

    try:
        new, rows = _local(args, unit, write=not args.dry_run)
    except ServiceRunning as running:
        raise CLIError(
            f"the aifhub service ({running.holder}) owns the ledger's database now: stop it, or use --dry-run"
        )
    for j in new:
        fix = j["corrected_gpu_ms"]
        print(
            f"{'would record' if args.dry_run else 'recorded'} job {j['job_id']}: {j['site_user']} {j['account']} "
            f"{j['state']} {j['elapsed_s']} s, {j['gpu_count']} GPU(s), {j['gpu_ms'] / 3_600_000:.4f} GPU-hours"
            + ("" if fix is None else f"; its session's charge corrected by {fix / 3_600_000:+.4f} GPU-hours")
        )
    for job_id, session, slurm_ms, ledger_ms in rows:
        ledger = "-" if ledger_ms is None else f"{ledger_ms / 3_600_000:.4f}"
        print(f"job {job_id} session {session or '-'}: Slurm {slurm_ms / 3_600_000:.4f} GPU-hours, ledger {ledger}")
    print(f"# {len(new)} new job(s) from sacct; {len(rows)} recorded in all")
    return 0
