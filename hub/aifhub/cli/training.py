"""``aifhub training report --format csv|json``: the AI Factory's training figures (suppressed under 5 people)."""

import sys

from ..catalog import load_catalog, load_images
from ..credentials import report
from ..credentials.issuer import CredentialIssuer
from ..catalog.images import images_dir_for
from .common import CLIError, print_json, service_api, state_options
from .localstate import ServiceRunning, _local


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


def register_credentials(sub):
    creds = sub.add_parser("credentials", help="the issuer of completion credentials (Open Badges)")
    csub = creds.add_subparsers(dest="credentials_cmd", required=True, metavar="COMMAND")
    p = csub.add_parser(
        "rotate-key",
        parents=[state_options()],
        help="retire the issuer's signing key and make a new one (old credentials keep verifying); "
        "run it while the service is stopped",
    )
    p.set_defaults(func=rotate_key)


def rotate_key(args):
    try:
        _local(args, lambda s: None, write=True)  # refuses while the service holds the state
    except ServiceRunning as running:
        raise CLIError(f"the aifhub service ({running.holder}) is running on this state: stop it, then rotate the key")
    issuer = CredentialIssuer(args.state_dir)
    old = issuer.keys.current.fingerprint
    new = issuer.keys.rotate()
    print_json({"retired": old, "current": new.fingerprint, "issuer": issuer.issuer_id()})
    return 0
