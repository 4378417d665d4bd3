"""``aifhub alloc create|list|show|topup|close`` and ``aifhub usage report``.

On the local state (the service's database: ``$AIFHUB_DB_URL``, else the SQLite file in ``--state-dir``)
or, with ``--url``, through a running service's REST API. Changes to the local state refuse while the
service runs on it (it holds the database's lease): they go through the service's API then, when
there is a token in ``$AIFHUB_TOKEN``.
"""

import json
import sys
from pathlib import Path

from ..auth.people import with_names
from ..ledger import allocations, reports
from .localstate import ServiceRunning, _local
from .common import CLIError, json_option, local_token, print_json, print_table, service_api, state_options

FORMATS = ("table", "csv", "json", "waldur", "car", "slurm")


def register(sub):
    alloc = sub.add_parser("alloc", help="allocation records: the granted projects that pay for GPU-hours")
    asub = alloc.add_subparsers(dest="alloc_cmd", required=True, metavar="COMMAND")

    p = asub.add_parser("create", parents=[state_options(), json_option()], help="record a new allocation")
    p.add_argument("id", help="allocation id, e.g. EHPC-AIF-2026-PG01")
    p.add_argument("--gpu-hours", required=True, type=float, help="granted GPU-hours")
    p.add_argument("--start", help="first day it may be used (YYYY-MM-DD)")
    p.add_argument("--end", help="last day it may be used (YYYY-MM-DD)")
    p.add_argument("--title", default="", help="a title people recognise")
    p.add_argument("--access-call", default="", help="the access call or mode that granted it")
    p.add_argument("--owner", default="", help="who owns it (principal investigator)")
    p.set_defaults(func=create)

    p = asub.add_parser("list", parents=[state_options(), json_option()], help="list allocations with their balances")
    p.set_defaults(func=list_allocations)

    p = asub.add_parser(
        "show", parents=[state_options(), json_option()], help="granted, used, held and remaining GPU-hours"
    )
    p.add_argument("id")
    p.set_defaults(func=show)

    p = asub.add_parser("topup", parents=[state_options(), json_option()], help="add GPU-hours to an allocation")
    p.add_argument("id")
    p.add_argument("--gpu-hours", required=True, type=float, help="GPU-hours to add")
    p.add_argument("--note", default="", help="why (kept with the change)")
    p.set_defaults(func=topup)

    p = asub.add_parser(
        "close", parents=[state_options(), json_option()], help="close an allocation: no new sandboxes on it"
    )
    p.add_argument("id")
    p.add_argument("--note", default="")
    p.set_defaults(func=close)

    usage = sub.add_parser("usage", help="usage reports and exports")
    usub = usage.add_subparsers(dest="usage_cmd", required=True, metavar="COMMAND")
    p = usub.add_parser(
        "report", parents=[state_options()], help="usage per session, or exports for allocation systems"
    )
    p.add_argument("--allocation", help="only this allocation")
    p.add_argument("--course", help="only this course")
    p.add_argument("--user", help="only this learner")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table | csv | json | waldur (component usages) | car (EMI Compute Accounting Records) | slurm (the "
        "sacctmgr commands of the ledger's association tree: docs/slurm.md)",
    )
    p.set_defaults(func=usage_report)


def _local_service_url(args):
    """The running service of ``--state-dir`` (its own port, as ``aifhub assignments`` finds it), or None."""
    try:
        return f"http://127.0.0.1:{json.loads((Path(args.state_dir) / 'ports.json').read_text())['service']}"
    except (OSError, ValueError, KeyError):
        return None


def _change(args, action, method, path, body):
    """A change: on the local state when no service runs on it, else through the running service's API."""
    if args.url:
        return service_api(args.url, method, path, body)
    try:
        return _local(args, action, write=True)
    except ServiceRunning as running:
        url = _local_service_url(args)
        if url:  # with $AIFHUB_TOKEN, or the token that hub keeps for this machine's CLI
            return service_api(url, method, path, body, token=local_token(args.state_dir))
        raise CLIError(
            f"the aifhub service ({running.holder}) is running on this state and owns its database: "
            "pass --url URL of the hub with an admin token in $AIFHUB_TOKEN, or stop the service first"
        )


def _show(data, as_json):
    if as_json:
        print_json(data)
        return 0
    rows = [(k.replace("_", " "), "" if v is None else v) for k, v in data.items() if k != "courses"]
    if data.get("courses") is not None:
        rows.append(("pays for", ", ".join(data["courses"]) or "-"))
    print_table(rows, ("FIELD", "VALUE"))
    return 0


def create(args):
    body = {
        "id": args.id,
        "gpu_hours": args.gpu_hours,
        "start": args.start,
        "end": args.end,
        "title": args.title,
        "access_call": args.access_call,
        "owner": args.owner,
    }
    data = _change(
        args,
        lambda s: allocations.describe(
            s,
            allocations.create(
                s, args.id, args.gpu_hours, args.start, args.end, args.title, args.access_call, args.owner
            ),
        ),
        "POST",
        "allocations",
        body,
    )
    return _show(data, args.json)


def list_allocations(args):
    data = (
        service_api(args.url, "GET", "allocations")["allocations"] if args.url else _local(args, allocations.list_all)
    )
    if args.json:
        print_json(data)
        return 0
    print_table(
        [
            (
                a["id"],
                a["status"],
                a["granted_gpu_hours"],
                a["used_gpu_hours"],
                a["held_gpu_hours"],
                a["remaining_gpu_hours"],
                a["end"] or "-",
                a["title"],
            )
            for a in data
        ],
        ("ID", "STATUS", "GRANTED", "USED", "HELD", "REMAINING", "ENDS", "TITLE"),
    )
    return 0


def show(args):
    if args.url:
        return _show(service_api(args.url, "GET", f"allocations/{args.id}"), args.json)
    return _show(_local(args, lambda s: allocations.describe(s, allocations.get(s, args.id))), args.json)


def topup(args):
    return _show(
        _change(
            args,
            lambda s: allocations.describe(s, allocations.topup(s, args.id, args.gpu_hours, args.note)),
            "POST",
            f"allocations/{args.id}/topup",
            {"gpu_hours": args.gpu_hours, "note": args.note},
        ),
        args.json,
    )


def close(args):
    return _show(
        _change(
            args,
            lambda s: allocations.describe(s, allocations.close(s, args.id, args.note)),
            "POST",
            f"allocations/{args.id}/close",
            {"note": args.note},
        ),
        args.json,
    )


def usage_report(args):
    fmt = args.format
    if fmt == "slurm":
        from .slurm import report_lines

        print("\n".join(report_lines(args)))
        return 0
    filters = {"allocation": args.allocation, "course": args.course, "user": args.user}
    if args.url:
        query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
        api_fmt = "json" if fmt == "table" else fmt
        data = service_api(args.url, "GET", f"usage?format={api_fmt}&{query}", raw=fmt in ("csv", "car"))
        if fmt in ("csv", "car"):
            sys.stdout.write(data)
            return 0
        rows = data.get("sessions")
        payloads = data.get("payloads")
    else:

        def run(s):
            if fmt == "waldur":
                return None, reports.waldur(s, **filters)
            if fmt == "car":
                return reports.car_xml(s, **filters), None
            return with_names(s, reports.session_rows(s, **filters)), None

        rows, payloads = _local(args, run)
        if fmt == "car":
            sys.stdout.write(rows + "\n")
            return 0
    if fmt == "waldur":
        print_json({"payloads": payloads})
    elif fmt == "json":
        print_json({"sessions": rows})
    elif fmt == "csv":
        sys.stdout.write(reports.to_csv(rows))
    else:
        print_table(
            [
                (
                    r["session"],
                    r["user"],
                    r.get("name") or "-",
                    r["course"],
                    r["allocation"] or "-",
                    r["gpu_kind"] or "cpu",
                    r["state"],
                    r["start"][:19],
                    r["gpu_hours"],
                    r["cpu_hours"],
                )
                for r in rows
            ],
            ("SESSION", "USER", "NAME", "COURSE", "ALLOCATION", "GPU", "STATE", "START", "GPU-H", "CPU-H"),
        )
    return 0
