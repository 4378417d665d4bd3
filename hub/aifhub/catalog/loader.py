"""Load ``courses/*/course.yaml`` into :class:`Course` objects, reporting every problem at once.

Nothing here raises for a bad course: a broken course comes back with its
problems, so that one bad file never takes the rest of the catalog down.
"""

import datetime
import json
import zoneinfo
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from .errors import CourseProblem
from .model import (
    Course,
    GpuRequest,
    IdleRule,
    LearnerQuota,
    SandboxRequest,
    Schedule,
    SlurmPlacement,
    WarmSession,
    parse_duration,
)

COURSE_FILE = "course.yaml"
SCHEMA_RESOURCE = "course.schema.json"


def course_schema():
    """The JSON Schema of course files (``aifhub/catalog/course.schema.json``)."""
    text = resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text()
    return json.loads(text)


_VALIDATOR = None


def _validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = jsonschema.Draft202012Validator(
            course_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
    return _VALIDATOR


def _plain(value):
    """YAML reads ``2026-12-01`` as a date; the schema speaks strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def _type_name(value):
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "nothing (null)",
    }.get(type(value), type(value).__name__)


def _describe(error):
    """Turn one jsonschema error into (field path, human reason)."""
    path = [str(p) for p in error.absolute_path]
    validator, value, expected = error.validator, error.instance, error.validator_value
    if validator == "required":
        missing = error.message.split("'")[1]
        return ".".join(path + [missing]), "missing (a required field)"
    if validator == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return ".".join(path + extra[:1]), f"unknown field (allowed here: {allowed})"
    if validator == "type":
        return ".".join(path), f"expected {_type_name_for(expected)}, got {_type_name(value)} ({value!r})"
    if validator == "enum":
        options = ", ".join(str(v) for v in expected)
        return ".".join(path), f"{value!r} is not one of: {options}"
    if validator == "pattern":
        hint = error.schema.get("description", f"it must match {expected}")
        return ".".join(path), f"{value!r} is not valid: {hint}"
    if validator == "format":
        return ".".join(path), f"{value!r} is not a valid {expected} (expected YYYY-MM-DD)"
    if validator == "uniqueItems":
        return ".".join(path), "has duplicate entries"
    return ".".join(path), error.message


def _type_name_for(expected):
    names = {
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "array": "a list",
        "object": "a mapping",
        "boolean": "true or false",
    }
    if isinstance(expected, list):
        return " or ".join(names.get(e, e) for e in expected)
    return names.get(expected, expected)


MAX_COURSE_FILE = 256 * 1024


class CourseLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: ``*name`` can repeat a node exponentially often (a few
    hundred bytes that take minutes and gigabytes to expand), and no course file needs one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not accepted in a course file; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _yaml_problem(file, exc):
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return CourseProblem(file, "", f"YAML syntax error{where}: {problem}")


def _semantic_problems(file, folder, data, images):
    """Checks that the schema cannot express. ``data`` passed the schema where it is used."""
    problems = []
    add = lambda field, reason: problems.append(CourseProblem(file, field, reason))  # noqa: E731

    if isinstance(data.get("id"), str) and data["id"] != folder.name:
        add("id", f"{data['id']!r} does not match its folder name {folder.name!r}")

    sandbox = data.get("sandbox") if isinstance(data.get("sandbox"), dict) else {}
    image = sandbox.get("image")
    if isinstance(image, str):
        if image not in images:
            known = ", ".join(sorted(images)) or "none"
            add("sandbox.image", f"unknown image {image!r} (known images in sandbox_images/: {known})")
        elif isinstance(sandbox.get("gpu"), dict) and not images[image].gpu:
            add("sandbox.image", f"image {image!r} has no GPU support, but the course asks for a GPU")

    schedule = data.get("schedule") if isinstance(data.get("schedule"), dict) else {}
    start, end = _date_or_none(schedule.get("start")), _date_or_none(schedule.get("end"))
    if start and end and end < start:
        add("schedule.end", f"ends ({end}) before it starts ({start})")
    tz = schedule.get("timezone")
    if isinstance(tz, str):
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            add("schedule.timezone", f"unknown time zone {tz!r} (expected an IANA name such as Europe/Paris)")

    if data.get("enrollment") == "code" and not data.get("enrollment_code"):
        add("enrollment_code", "missing: courses with 'enrollment: code' need the code learners type")

    zone = _zone(tz)
    for i, event in enumerate(data.get("sessions") or []):
        if not isinstance(event, dict):
            continue
        start, end = _datetime_or_none(event.get("start"), zone), _datetime_or_none(event.get("end"), zone)
        for key, value in (("start", start), ("end", end)):
            if isinstance(event.get(key), str) and value is None:
                add(f"sessions.{i}.{key}", f"{event[key]!r} is not a date and time (expected e.g. 2026-12-02T14:00)")
        if start and end and end <= start:
            add(f"sessions.{i}.end", f"ends ({end:%Y-%m-%d %H:%M}) before it starts ({start:%Y-%m-%d %H:%M})")
    completion = data.get("completion") if isinstance(data.get("completion"), dict) else {}
    listed = set(data.get("assignments") or ()) if isinstance(data.get("assignments"), list) else set()
    for assignment in completion.get("assignments") or {}:
        if assignment not in listed:
            add(
                f"completion.assignments.{assignment}",
                "is not one of the course's assignments (list it in assignments:)",
            )
    wanted = completion.get("sessions")
    held = len(data.get("sessions") or []) if isinstance(data.get("sessions"), list) else 0
    if isinstance(wanted, int) and wanted > held:
        add("completion.sessions", f"asks for {wanted} sessions attended, but the course schedules {held} (sessions:)")
    idle = data.get("idle") if isinstance(data.get("idle"), dict) else {}
    if isinstance(idle.get("after"), str) and _seconds_or_none(idle["after"]) == 0:
        add("idle.after", "must be longer than no time at all (e.g. 30m)")

    for i, name in enumerate(data.get("assignments") or []):
        if not isinstance(name, str):
            continue
        try:
            found = (folder / "source" / name).is_dir()
        except OSError as exc:
            add(f"assignments.{i}", f"cannot read source/{name}/: {exc.strerror}")
            continue
        if not found:
            add(f"assignments.{i}", f"assignment {name!r} has no source folder source/{name}/")
    return problems


def _zone(name):
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _datetime_or_none(text, zone):
    """An aware datetime from ISO text (naive ones are in ``zone``), or None."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=zone)


def _seconds_or_none(text):
    try:
        return parse_duration(text)
    except ValueError:
        return None


def _date_or_none(text):
    try:
        return datetime.date.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _build(folder, data):
    sandbox = data["sandbox"]
    gpu = sandbox.get("gpu")
    schedule = data.get("schedule")
    per_learner = (data.get("quota") or {}).get("per_learner")
    return Course(
        id=data["id"],
        title=data["title"],
        description=data.get("description", ""),
        kind=data["kind"],
        enrollment=data["enrollment"],
        enrollment_code=data.get("enrollment_code"),
        instructors=tuple(data["instructors"]),
        roster=tuple(data.get("roster") or ()),
        helpers=tuple(data.get("helpers") or ()),
        schedule=None
        if not schedule
        else Schedule(
            start=datetime.date.fromisoformat(schedule["start"]),
            end=_date_or_none(schedule.get("end")),
            timezone=schedule.get("timezone", "UTC"),
        ),
        sandbox=SandboxRequest(
            image=sandbox["image"],
            gpu=None if gpu is None else GpuRequest(kind=gpu["kind"], count=gpu.get("count", 1)),
            cpu=sandbox.get("cpu"),
            memory=sandbox.get("memory"),
            max_session=sandbox.get("max_session"),
            disk=sandbox.get("disk"),
        ),
        allocation=data.get("allocation"),
        slurm=SlurmPlacement(**(data.get("slurm") or {})),
        budget=dict(data.get("budget") or {}),
        quota=None
        if not per_learner
        else LearnerQuota(
            window=per_learner["window"],
            gpu_hours=per_learner.get("gpu_hours"),
            cpu_hours=per_learner.get("cpu_hours"),
        ),
        assignments=tuple(data.get("assignments") or ()),
        idle=None
        if not data.get("idle")
        else IdleRule(
            after_s=parse_duration(data["idle"]["after"]),
            grace_s=parse_duration(data["idle"]["grace"]) if data["idle"].get("grace") else 300,
        ),
        sessions=tuple(
            sorted(
                (
                    WarmSession(
                        start=_datetime_or_none(e["start"], _zone((schedule or {}).get("timezone"))),
                        end=_datetime_or_none(e["end"], _zone((schedule or {}).get("timezone"))),
                        expected=e["expected"],
                    )
                    for e in data.get("sessions") or ()
                ),
                key=lambda w: w.start,
            )
        ),
        completion=data.get("completion"),
        path=folder,
    )


def load_course(folder, images, display_root=None):
    """Load one course folder. Returns ``(course or None, [CourseProblem, ...])``.

    ``display_root``: paths in problems are shown relative to it when given.
    """
    folder = Path(folder)
    path = folder / COURSE_FILE
    try:
        file = str(path.relative_to(display_root)) if display_root else str(path)
    except ValueError:
        file = str(path)
    try:
        if path.stat().st_size > MAX_COURSE_FILE:
            return None, [
                CourseProblem(
                    file, "", f"is larger than {MAX_COURSE_FILE // 1024} KiB: a course file holds settings, not data"
                )
            ]
        text = path.read_text()
    except FileNotFoundError:
        return None, [CourseProblem(file, "", "course.yaml is missing")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [CourseProblem(file, "", f"cannot be read: {exc}")]
    try:
        data = yaml.load(text, Loader=CourseLoader)  # noqa: S506 - a SafeLoader without aliases
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(file, exc)]
    if not isinstance(data, dict):
        return None, [CourseProblem(file, "", f"expected a mapping of fields, got {_type_name(data)}")]
    data = _plain(data)

    problems = [CourseProblem(file, *_describe(e)) for e in _validator().iter_errors(data)]
    problems += _semantic_problems(file, folder, data, images)
    problems.sort(key=lambda p: p.field)
    if problems:
        return None, problems
    return _build(folder, data), []


@dataclass
class Catalog:
    """Every course found: the good ones by id, the broken ones by folder name."""

    courses: dict = field(default_factory=dict)
    broken: dict = field(default_factory=dict)

    def get(self, course_id):
        return self.courses.get(course_id)


def course_folders(dirs):
    """Course folders in ``dirs``; a later dir overrides an earlier one's folder of the same name."""
    found = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for child in sorted(d.iterdir()):
            if child.is_dir() and not child.name.startswith((".", "_")):
                found[child.name] = child
    return found


def fingerprint(dirs):
    """A cheap value that changes whenever a course file is added, removed or edited."""
    marks = []
    for name, folder in sorted(course_folders(dirs).items()):
        try:
            st = (folder / COURSE_FILE).stat()
            marks.append((name, str(folder), st.st_mtime_ns, st.st_size))
        except OSError:
            marks.append((name, str(folder), None, None))
    return tuple(marks)


def load_catalog(dirs, images):
    """Load every course folder in ``dirs``."""
    catalog = Catalog()
    for name, folder in course_folders(dirs).items():
        course, problems = load_course(folder, images, display_root=folder.parent.parent)
        if course is not None:
            catalog.courses[course.id] = course
        else:
            catalog.broken[name] = problems
    return catalog
