"""``aifhub training report --format csv|json``: the AI Factory's training figures (suppressed under 5 people)."""

import sys

from ..catalog import load_catalog, load_images
from ..credentials import report
from .common import images_dir_for, print_json, service_api, state_options
from .ledger import _local


def register(sub):
    training = sub.add_parser("training", help="training reports: trainees, completions, hours, GPU-hours")
    tsub = training.add_subparsers(dest="training_cmd", required=True, metavar="COMMAND")
    p = tsub.add_parser(
        "report",
        parents=[state_options()],
        help="unique trainees, participations, completions, hours and GPU-hours by course, kind, session, "
        "country, sector and gender (cells under 5 people suppressed)",
    )
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    p.set_defaults(func=training_report)


def training_report(args):
    if args.url:
        data = service_api(args.url, "GET", f"training/report?format={args.format}", raw=args.format == "csv")
        if args.format == "csv":
            sys.stdout.write(data)
        else:
            print_json(data)
        return 0
    try:
        catalog = load_catalog([args.courses], load_images(images_dir_for(args.courses)))
    except OSError:
        catalog = None
    rows = report.report(_local(args, report.gather), catalog)
    if args.format == "csv":
        sys.stdout.write(report.to_csv(rows))
    else:
        print_json({"minimum_cell": report.MIN_CELL, "rows": rows})
    return 0
