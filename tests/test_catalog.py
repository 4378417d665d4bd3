"""Course files: the schema, every kind of mistake with its own message, and the CLI over them."""

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from aifhub.catalog import load_catalog, load_course, load_images

REPO = Path(__file__).resolve().parent.parent
IMAGES = load_images(REPO / "sandbox_images")
GOOD = yaml.safe_load((REPO / "courses" / "dl-basics" / "course.yaml").read_text())


def write_course(root, folder, text):
    path = root / folder
    (path / "source" / "ps1-digits").mkdir(parents=True, exist_ok=True)
    (path / "course.yaml").write_text(text)
    return path


def variant(**changes):
    data = json.loads(json.dumps(GOOD, default=str))
    for dotted, value in changes.items():
        node, *rest = dotted.split("__")
        target = data
        keys = [node, *rest]
        for key in keys[:-1]:
            target = target[key]
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return yaml.safe_dump(data, sort_keys=False)


DELETE = object()

BROKEN = [
    # (case, folder, course.yaml text, field, words in the reason)
    ("missing field", "dl-basics", variant(title=DELETE), "title", "missing"),
    ("wrong type", "dl-basics", variant(sandbox__cpu="four"), "sandbox.cpu", "expected a number"),
    ("wrong type: instructors", "dl-basics", variant(instructors="instructor"), "instructors", "expected a list"),
    ("unknown image", "dl-basics", variant(sandbox__image="tensorflow"), "sandbox.image", "unknown image 'tensorflow'"),
    ("bad date", "dl-basics", variant(schedule={"start": "2026-02-30"}), "schedule.start", "not a valid date"),
    (
        "end before start",
        "dl-basics",
        variant(schedule={"start": "2026-12-05", "end": "2026-12-01"}),
        "schedule.end",
        "ends (2026-12-01) before it starts (2026-12-05)",
    ),
    ("id not matching folder", "dl-renamed", variant(), "id", "does not match its folder name 'dl-renamed'"),
    ("YAML syntax error", "dl-basics", "id: dl-basics\ntitle: [unclosed\n", "", "YAML syntax error at line"),
    ("unknown field", "dl-basics", variant(sandbox__gpus=2), "sandbox.gpus", "unknown field"),
    ("bad enum", "dl-basics", variant(kind="lecture"), "kind", "'lecture' is not one of: workshop, course, mooc"),
    ("bad window", "dl-basics", variant(quota__per_learner__window="month"), "quota.per_learner.window", "not one of"),
    (
        "gpu on cpu image",
        "dl-basics",
        variant(sandbox__gpu={"kind": "gpu", "count": 1}),
        "sandbox.image",
        "has no GPU support",
    ),
    (
        "missing assignment source",
        "dl-basics",
        variant(assignments=["ps1-digits", "ps9"]),
        "assignments.1",
        "no source folder",
    ),
    ("not a mapping", "dl-basics", "- just\n- a list\n", "", "expected a mapping"),
    ("bad memory", "dl-basics", variant(sandbox__memory="lots"), "sandbox.memory", "not valid"),
    (
        "bad timezone",
        "dl-basics",
        variant(schedule={"start": "2026-01-01", "timezone": "Mars/Olympus"}),
        "schedule.timezone",
        "unknown time zone",
    ),
    ("code enrolment without code", "dl-basics", variant(enrollment="code"), "enrollment_code", "missing"),
    (
        "session not a time",
        "dl-basics",
        variant(sessions=[{"start": "tuesday 2pm", "end": "2026-12-02T17:00", "expected": 5}]),
        "sessions.0.start",
        "is not a date and time",
    ),
    (
        "session ends first",
        "dl-basics",
        variant(sessions=[{"start": "2026-12-02T14:00", "end": "2026-12-02T13:00", "expected": 5}]),
        "sessions.0.end",
        "before it starts",
    ),
    (
        "session without learners",
        "dl-basics",
        variant(sessions=[{"start": "2026-12-02T14:00", "end": "2026-12-02T17:00", "expected": 0}]),
        "sessions.0.expected",
        "0",
    ),
    ("idle rule without time", "dl-basics", variant(idle={"after": "soon"}), "idle.after", "not valid"),
    ("YAML alias", "dl-basics", "id: dl-basics\nx: &a [1]\ntitle: *a\n", "", "aliases (*a) are not accepted"),
    ("oversized file", "dl-basics", variant() + "#" * 300_000 + "\n", "", "larger than 256 KiB"),
]


def alias_bomb():
    """A few hundred bytes that expand to 9**9 strings (a 'billion laughs')."""
    lines = [variant().rstrip(), 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines + ["description: *a8"]) + "\n"


def test_sessions_and_the_idle_rule_are_read_in_the_courses_time_zone(tmp_path):
    text = variant(
        schedule={"start": "2026-09-01", "timezone": "Europe/Paris"},
        idle={"after": "30m"},
        sessions=[
            {"start": "2026-12-03T14:00", "end": "2026-12-03T17:00", "expected": 40},
            {"start": "2026-12-02T13:00:00+00:00", "end": "2026-12-02T16:00:00+00:00", "expected": 20},
        ],
    )
    course, problems = load_course(write_course(tmp_path, "dl-basics", text), IMAGES)
    assert problems == []
    assert course.idle.after_s == 1800 and course.idle.grace_s == 300
    first, second = course.sessions  # in start order
    assert (first.start.isoformat(), first.expected) == ("2026-12-02T13:00:00+00:00", 20)
    assert second.start.utcoffset().total_seconds() == 3600 and second.start.hour == 14  # Paris, in December


@pytest.mark.parametrize("case, folder, text, field, words", BROKEN, ids=[b[0] for b in BROKEN])
def test_each_mistake_gets_its_own_message(tmp_path, case, folder, text, field, words):
    course, problems = load_course(write_course(tmp_path, folder, text), IMAGES, display_root=tmp_path)
    assert course is None
    matching = [p for p in problems if p.field == field and words in p.reason]
    assert matching, f"{case}: no problem on {field!r} saying {words!r}; got {[str(p) for p in problems]}"
    assert matching[0].file == f"{folder}/course.yaml"


def test_an_unreadable_source_folder_is_a_problem_not_a_crash():
    """Loading as a user who cannot read ``source/`` reports it; the loader does not raise."""
    import os
    import tempfile

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to load the course as an unprivileged user")
    root = Path(tempfile.mkdtemp(prefix="aifhub-unreadable-"))
    try:
        root.chmod(0o755)
        folder = write_course(root, "dl-basics", variant())
        for path in (folder, folder / "course.yaml"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (folder / "source").chmod(0o700)  # root's, as a root hub leaves it
        code = (
            "import sys; from aifhub.catalog import load_course, load_images;"
            f"c, p = load_course({str(folder)!r}, load_images({str(REPO / 'sandbox_images')!r}));"
            "print(c, [str(x) for x in p])"
        )
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert (
            out.stdout.startswith("None")
            and "assignments.0: cannot read source/ps1-digits/: Permission denied" in out.stdout
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_every_problem_is_reported_at_once(tmp_path):
    text = variant(title=DELETE, kind="lecture", sandbox__image="nope", sandbox__cpu="x")
    _, problems = load_course(write_course(tmp_path, "dl-basics", text), IMAGES)
    assert {p.field for p in problems} >= {"title", "kind", "sandbox.image", "sandbox.cpu"}


def test_a_broken_course_does_not_take_the_others_down(tmp_path):
    shutil.copytree(REPO / "courses", tmp_path / "courses")
    write_course(tmp_path / "courses", "zz-broken", "id: zz-broken\n")
    catalog = load_catalog([tmp_path / "courses"], IMAGES)
    assert set(catalog.courses) == {"dl-basics", "gpu-fundamentals"}
    assert set(catalog.broken) == {"zz-broken"}


def test_example_courses_are_valid_and_complete():
    catalog = load_catalog([REPO / "courses"], IMAGES)
    assert not catalog.broken
    gpu = catalog.courses["gpu-fundamentals"]
    assert gpu.enrollment == "roster" and gpu.sandbox.gpu.kind == "gpu" and gpu.kind == "workshop"
    mooc = catalog.courses["dl-basics"]
    assert mooc.enrollment == "open" and mooc.sandbox.gpu is None and mooc.kind == "mooc"


def test_schema_lives_at_a_stable_path_and_checks_the_examples():
    import jsonschema

    schema = json.loads(resources.files("aifhub.catalog").joinpath("course.schema.json").read_text())
    for path in (REPO / "courses").glob("*/course.yaml"):
        data = json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))
        jsonschema.Draft202012Validator(schema).validate(data)


def aifhub(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "aifhub", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_validate_reports_file_field_and_reason(tmp_path):
    write_course(tmp_path, "dl-basics", variant(sandbox__image="tensorflow", kind="lecture"))
    out = aifhub("courses", "validate", str(tmp_path / "dl-basics"), "--images", str(REPO / "sandbox_images"))
    assert out.returncode == 1
    assert "BROKEN" in out.stdout and "sandbox.image: unknown image 'tensorflow'" in out.stdout
    assert "kind: 'lecture' is not one of" in out.stdout

    ok = aifhub("courses", "validate", "courses")
    assert ok.returncode == 0 and ok.stdout.count("ok ") == 2

    as_json = json.loads(aifhub("courses", "validate", "courses", "--json").stdout)
    assert {r["id"] for r in as_json} == {"dl-basics", "gpu-fundamentals"} and all(r["ok"] for r in as_json)


def test_cli_validate_refuses_a_yaml_alias_bomb_at_once(tmp_path):
    import time

    write_course(tmp_path, "dl-basics", alias_bomb())
    began = time.monotonic()
    out = aifhub("courses", "validate", str(tmp_path / "dl-basics"), "--images", str(REPO / "sandbox_images"))
    assert out.returncode == 1 and "aliases (*a0) are not accepted" in out.stdout, out.stdout
    assert time.monotonic() - began < 30  # it used to expand for minutes (and gigabytes)


def test_cli_list_local_state(tmp_path):
    out = aifhub("courses", "list", "--json", "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert [c["id"] for c in data["courses"]] == ["dl-basics", "gpu-fundamentals"] and data["broken"] == {}
    table = aifhub("courses", "list", "--state-dir", str(tmp_path / "state")).stdout
    assert "gpu-fundamentals" in table and "gpu x1" in table


def test_cli_publish_into_local_state_overrides_and_lists(tmp_path):
    state = tmp_path / "state"
    course = tmp_path / "dl-basics"
    shutil.copytree(REPO / "courses" / "dl-basics", course)
    text = (course / "course.yaml").read_text().replace("title: Deep Learning Basics", "title: Deep Learning Basics v2")
    (course / "course.yaml").write_text(text)
    out = aifhub("courses", "publish", str(course), "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    listed = json.loads(aifhub("courses", "list", "--json", "--state-dir", str(state)).stdout)
    assert {c["id"]: c["title"] for c in listed["courses"]}["dl-basics"] == "Deep Learning Basics v2"


def test_cli_publish_copies_no_link_nor_what_it_points_at(tmp_path):
    """The hub copies published materials into learners' folders as root: a link in a course folder
    (to a secret of whoever publishes) is left out, not followed."""
    secret = tmp_path / "secret"
    secret.write_text("private key")
    secret.chmod(0o600)
    course = tmp_path / "dl-basics"
    shutil.copytree(REPO / "courses" / "dl-basics", course)
    (course / "notes.txt").symlink_to(secret)
    (course / "data").symlink_to(tmp_path)
    out = aifhub("courses", "publish", str(course), "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 0, out.stderr
    published = tmp_path / "state" / "courses" / "dl-basics"
    assert (published / "README.md").exists() and not os.path.lexists(published / "notes.txt")
    assert not os.path.lexists(published / "data")
    assert "Skipped" in out.stderr and "symbolic link" in out.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["up", "--ip", "0.0.0.0"], "refusing to serve on 0.0.0.0"),
        (["up", "--ip", "10.1.2.3"], "loopback only"),
        (["up", "--gpus", "zero"], "expected 'none', 'kubernetes' or a comma list"),
        (["up", "--gpus", "0,0"], "listed twice"),
        (["up", "--gpus", "kubernetes"], "is for the Kubernetes deployment"),
        (["up", "--meter-interval", "0"], "positive number"),
        (["up", "AIFHUB_ADMIN_TOKEN=short"], "at least 8 characters"),
    ],
)
def test_up_refuses_bad_settings_before_starting_anything(tmp_path, args, words, monkeypatch):
    for arg in [a for a in args if "=" in a and not a.startswith("-")]:
        monkeypatch.setenv(*arg.split("=", 1))
        args = [a for a in args if a != arg]
    out = aifhub(*args, "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 2
    assert words in out.stderr
    assert not (tmp_path / "state").exists()


def test_every_command_has_help():
    for args in (
        ["--help"],
        ["up", "--help"],
        ["courses", "validate", "--help"],
        ["courses", "list", "--help"],
        ["courses", "publish", "--help"],
    ):
        out = aifhub(*args)
        assert out.returncode == 0 and "usage: aifhub" in out.stdout
