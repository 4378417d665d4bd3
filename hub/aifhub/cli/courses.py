"""``aifhub courses validate|list|publish``."""

import shutil
import tempfile
from pathlib import Path

from .. import fsafe
from ..catalog import load_catalog, load_course, load_images
from ..catalog.images import IMAGES_HELP, images_dir_for
from ..catalog.loader import COURSE_FILE
from .common import CLIError, json_option, print_json, print_table, service_api, state_options


def register(sub):
    courses = sub.add_parser("courses", help="validate, list and publish courses")
    csub = courses.add_subparsers(dest="courses_cmd", required=True, metavar="COMMAND")

    p = csub.add_parser("validate", parents=[json_option()], help="check course folders and report every problem")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a course folder, its course.yaml, or a folder of courses")
    p.add_argument("--images", help=IMAGES_HELP)
    p.set_defaults(func=validate)

    p = csub.add_parser("list", parents=[state_options(), json_option()], help="list the catalog's courses")
    p.set_defaults(func=list_courses)

    p = csub.add_parser(
        "publish", parents=[state_options()], help="validate a course and publish it to the running hub"
    )
    p.add_argument("path", metavar="PATH", help="the course folder to publish")
    p.set_defaults(func=publish)


def _course_folders(path):
    path = Path(path)
    if path.name == COURSE_FILE:
        return [path.parent]
    if (path / COURSE_FILE).exists() or not path.is_dir():
        return [path]
    inner = sorted(p.parent for p in path.glob(f"*/{COURSE_FILE}"))
    return inner or [path]


def _check(folder, images_dir=None):
    images = load_images(images_dir_for(folder.parent, images_dir))
    return load_course(folder, images)


def validate(args):
    results, failed = [], False
    for path in args.paths:
        for folder in _course_folders(path):
            course, problems = _check(folder, args.images)
            failed |= bool(problems)
            results.append(
                {
                    "path": str(folder),
                    "ok": not problems,
                    "id": course.id if course else None,
                    "problems": [p.to_dict() for p in problems],
                }
            )
    if args.json:
        print_json(results)
    else:
        for r in results:
            if r["ok"]:
                print(f"ok      {r['path']} ({r['id']})")
            else:
                print(f"BROKEN  {r['path']}: {len(r['problems'])} problem(s)")
                for p in r["problems"]:
                    where = f"{p['file']}: {p['field']}" if p["field"] else p["file"]
                    print(f"    {where}: {p['reason']}")
    return 1 if failed else 0


def _local_catalog(args):
    dirs = [Path(args.courses), Path(args.state_dir) / "courses"]
    return load_catalog(dirs, load_images(images_dir_for(args.courses)))


def list_courses(args):
    if args.url:
        data = service_api(args.url, "GET", "courses")
        courses, broken = data["courses"], data.get("broken", {})
    else:
        catalog = _local_catalog(args)
        courses = [c.summary() for c in sorted(catalog.courses.values(), key=lambda c: c.id)]
        broken = {name: [p.to_dict() for p in problems] for name, problems in catalog.broken.items()}
    if args.json:
        print_json({"courses": courses, "broken": broken})
        return 0
    rows = []
    for c in courses:
        gpu = c["sandbox"]["gpu"]
        rows.append(
            (c["id"], c["title"], c["kind"], c["enrollment"], f"{gpu['kind']} x{gpu['count']}" if gpu else "cpu", "ok")
        )
    for name, problems in sorted(broken.items()):
        rows.append((name, "-", "-", "-", "-", f"BROKEN ({len(problems)} problem(s))"))
    print_table(rows, ("ID", "TITLE", "KIND", "ENROLMENT", "GPU", "STATUS"))
    return 0


def publish(args):
    folder = _course_folders(args.path)[0]
    course, problems = _check(folder)
    if problems:
        lines = "\n".join(f"    {p}" for p in problems)
        raise CLIError(f"{folder} is not valid; nothing was published:\n{lines}")
    target_root = Path(args.state_dir) / "courses"
    target_root.mkdir(parents=True, exist_ok=True)
    target = target_root / course.id
    if folder.resolve() != target.resolve():
        staging = Path(tempfile.mkdtemp(prefix=f".{course.id}-", dir=target_root))
        # links and special files are not published (nor followed): the hub copies these files as root
        with fsafe.opened(folder) as src, fsafe.opened(staging) as dst, dst.mkdir(course.id, 0o755) as d:
            fsafe.copy_tree(src, d, dir_mode=0o755)
        old = target_root / f".{course.id}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        (staging / course.id).rename(target)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Published {course.id} ({course.title}) to {target}.")
    if args.url:
        result = service_api(args.url, "POST", "catalog/reload")
        state = "live now" if course.id in result["courses"] else "NOT live: see `aifhub courses list`"
        print(f"The running hub reloaded its catalog: {course.id} is {state}.")
    else:
        print("A running hub picks it up within a few seconds; no restart needed.")
    return 0
