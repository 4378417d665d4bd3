"""``aifhub assignments release|collect|autograde|feedback|jobs`` and ``aifhub grades export``.

Instructors' nbgrader steps, done by the running aifhub service (which owns the course
directories, the gradebooks and the grading queue): with ``--url URL`` and a token in
``$AIFHUB_TOKEN``, or on this machine's hub found through ``--state-dir``, with the token that hub
keeps for this machine's CLI (``<state>/secrets/cli_token``, readable by whoever runs ``aifhub up``).
"""

import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

from .common import CLIError, json_option, local_token, print_json, print_table, service_api, state_options

ACTIONS = {
    "release": "generate the student version from courses/<id>/source/ and release it to learners",
    "collect": "collect every learner's latest submission into the course directory",
    "autograde": "queue autograding of every collected submission (sandboxed, parallel); waits unless --no-wait",
    "feedback": "generate feedback for graded submissions and release it to each learner",
}


def register(sub):
    p = sub.add_parser("assignments", help="nbgrader assignments: release, collect, autograde, feedback, jobs")
    asub = p.add_subparsers(dest="assignments_cmd", required=True, metavar="COMMAND")
    for action, text in ACTIONS.items():
        q = asub.add_parser(action, parents=[state_options(), json_option()], help=text, description=text)
        q.add_argument("course", help="course id")
        q.add_argument("assignment", help="assignment id (a folder under the course's source/)")
        if action == "autograde":
            q.add_argument("--student", action="append", help="only this learner (repeat for more)")
            q.add_argument("--no-wait", action="store_true", help="return once the jobs are queued")
            q.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the jobs (default: 3600)")
        q.set_defaults(func=run_action, action=action)
    q = asub.add_parser("jobs", parents=[state_options(), json_option()], help="grading jobs and their state")
    q.add_argument("course", help="course id")
    q.add_argument("assignment", nargs="?", help="only this assignment")
    q.set_defaults(func=show_jobs)

    g = sub.add_parser("grades", help="grades of nbgrader courses")
    gsub = g.add_subparsers(dest="grades_cmd", required=True, metavar="COMMAND")
    q = gsub.add_parser("export", parents=[state_options()], help="export a course's grades (CSV by default)")
    q.add_argument("course", help="course id")
    q.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    q.add_argument("--out", help="write to this file instead of standard output")
    q.set_defaults(func=export_grades)


def _url(args):
    """The service to talk to: --url, or the hub running on --state-dir."""
    if args.url:
        return args.url
    ports = Path(args.state_dir) / "ports.json"
    if not ports.exists():
        raise CLIError(
            f"no aifhub state in {args.state_dir}: start the hub (`make run`, or `aifhub up`) and run this "
            "in the same folder, or pass --state-dir of a running `aifhub up`, or --url URL with "
            "$AIFHUB_TOKEN",
            status=2,
        )
    port = json.loads(ports.read_text())["service"]
    return f"http://127.0.0.1:{port}"


def _api(args, method, path, body=None, raw=False):
    url = _url(args)
    return service_api(url, method, path, body, raw=raw, token=None if args.url else local_token(args.state_dir))


def _base(args):
    return f"courses/{quote(args.course)}/assignments/{quote(args.assignment)}"


def job_rows(jobs):
    return [
        (
            j["id"],
            j["student_id"],
            j["assignment_id"],
            j["state"],
            "-" if j["score"] is None else f"{j['score']:g}/{j['max_score']:g}",
            j["reason"] or "-",
            (j["detail"] or "")[:80],
        )
        for j in jobs
    ]


JOB_HEADERS = ("JOB", "STUDENT", "ASSIGNMENT", "STATE", "SCORE", "REASON", "DETAIL")


def run_action(args):
    action = args.action
    if action == "feedback":
        result = _api(args, "POST", f"{_base(args)}/feedback")
    elif action == "autograde":
        body = {"students": args.student} if args.student else None
        result = _api(args, "POST", f"{_base(args)}/autograde", body)
        if not args.no_wait:
            result["jobs"] = wait_for_jobs(args, [j["id"] for j in result["jobs"]], args.timeout)
    else:
        result = _api(args, "POST", f"{_base(args)}/{action}")
    if args.json:
        print_json(result)
    elif action == "release":
        print(f"Released {args.course}/{args.assignment}: {', '.join(result['notebooks']) or 'no notebooks'}")
    elif action == "collect":
        print(
            f"Collected {len(result['collected'])} submission(s) of {args.assignment}: "
            f"{', '.join(result['collected']) or '-'}"
        )
    elif action == "feedback":
        print(f"Released feedback on {args.assignment} to: {', '.join(result['released_to']) or 'nobody'}")
    else:
        print_table(job_rows(result["jobs"]), JOB_HEADERS)
    if action == "autograde" and any(j["state"] == "failed" for j in result["jobs"]):
        return 1
    return 0


def wait_for_jobs(args, ids, timeout):
    if not ids:
        return []
    deadline = time.monotonic() + timeout
    query = "&".join(f"id={i}" for i in ids)
    while True:
        jobs = _api(args, "GET", f"courses/{quote(args.course)}/jobs?{query}")["jobs"]
        if all(j["state"] in ("done", "failed") for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise CLIError(f"grading did not finish in {timeout:g} s; see `aifhub assignments jobs {args.course}`")
        time.sleep(0.5)


def show_jobs(args):
    path = f"courses/{quote(args.course)}/" + (
        f"assignments/{quote(args.assignment)}/jobs" if args.assignment else "jobs"
    )
    jobs = _api(args, "GET", path)["jobs"]
    if args.json:
        print_json(jobs)
    else:
        print_table(job_rows(jobs), JOB_HEADERS)
    return 0


def export_grades(args):
    text = _api(args, "GET", f"courses/{quote(args.course)}/grades?format={args.format}", raw=True)
    if args.format == "json":
        text = json.dumps(json.loads(text), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
