"""A hub whose service runs on PostgreSQL keeps courses' gradebooks there too: a schema and a login
role per course, reached by the grading workers and instructors' formgrader, by nothing else.

Runs when AIFHUB_TEST_PG_URL is set (`.ci/run` sets it). The hub first grades with SQLite gradebooks
(as an installation made before PostgreSQL gradebooks would have), then restarts with the default:
the gradebook is copied into PostgreSQL and grading goes on there.
"""

import csv
import io
from pathlib import Path

import pytest
import requests
from conftest import AS_ROOT, start_hub
from gradingkit import ASSIGNMENT, COURSE, blank_notebook, instructor_cli, solution_notebook, submit, wait_jobs
from ledgerkit import PG_URL
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

pytestmark = pytest.mark.skipif(not PG_URL, reason="AIFHUB_TEST_PG_URL not set")

SERVICE_ARGS = "--GradingManager.workers=2 --GradingManager.cell_timeout=10 --GradingManager.notebook_timeout=60"


@pytest.fixture(scope="module")
def hub(hub_dir, pg_database):
    hub = start_hub(
        hub_dir,
        gpus="none",
        env={"AIFHUB_DB_URL": pg_database, "AIFHUB_SERVICE_ARGS": SERVICE_ARGS + " --GradingManager.gradebook=sqlite"},
    )
    yield hub
    hub.stop()


def grade(hub, students):
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={"students": students})
    assert r.status_code == 202, r.text
    return wait_jobs(hub, [j["id"] for j in r.json()["jobs"]])


def grades(hub):
    rows = csv.DictReader(io.StringIO(instructor_cli(hub, "grades", "export", COURSE).stdout))
    return {row["student_id"]: float(row["score"]) for row in rows if row["score"]}


def test_grading_moves_into_postgresql_and_goes_on_there(hub, pg_database):
    course_dir = hub.state_dir / "grading" / COURSE
    instructor_cli(hub, "assignments", "release", COURSE, ASSIGNMENT)
    for name, nb in (("alice", solution_notebook()), ("bob", blank_notebook())):
        hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for(name))
        assert submit(hub, name, nb).status_code == 201
    jobs = grade(hub, ["alice", "bob"])
    assert jobs["alice"]["score"] == 10 and jobs["bob"]["score"] == 0, jobs
    assert (course_dir / "gradebook.db").exists()
    assert (course_dir / "gradebook.url").read_text().startswith("sqlite:///")

    hub.stop()  # the default: gradebooks live where the service's database is
    hub.env["AIFHUB_SERVICE_ARGS"] = SERVICE_ARGS
    hub.start()
    assert grades(hub) == {"alice": 10.0, "bob": 0.0}  # copied, nothing lost
    assert not (course_dir / "gradebook.db").exists() and (course_dir / "gradebook.db.copied-to-postgresql").exists()
    url = (course_dir / "gradebook.url").read_text().strip()
    role = make_url(url)
    assert role.drivername == "postgresql+psycopg" and role.username.endswith("_gradebook_dl_basics")
    assert "Gradebook of dl-basics copied from SQLite into PostgreSQL" in hub.logs()

    hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for("carol"))
    assert submit(hub, "carol", solution_notebook()).status_code == 201
    jobs = grade(hub, ["carol"])
    assert jobs["carol"]["state"] == "done" and jobs["carol"]["score"] == 10, jobs
    released = instructor_cli(hub, "assignments", "feedback", COURSE, ASSIGNMENT).stdout
    assert all(name in released for name in ("alice", "bob", "carol")), released
    assert grades(hub) == {"alice": 10.0, "bob": 0.0, "carol": 10.0}

    engine = create_engine(url)  # the course's own role: its gradebook is in its schema
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT current_schema()")) == "gradebook_dl_basics"
        assert conn.scalar(text("SELECT count(*) FROM submitted_assignment")) == 3
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.exec_driver_sql("SELECT * FROM public.grading_jobs")  # the service's tables are not its own
    engine.dispose()


def descendants(pid):
    """``pid`` and every process below it."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def test_no_process_of_the_hub_shows_the_service_database_password(hub, pg_database):
    """Command lines are readable by every user of the machine; the URL travels in the environment."""
    password = make_url(pg_database).password.encode()
    processes = descendants(hub.proc.pid)
    assert len(processes) >= 4  # aifhub up, the hub, the proxy, the service (and its grading workers)
    seen = []
    for pid in processes:
        try:
            if password in Path(f"/proc/{pid}/cmdline").read_bytes():
                seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:300])
        except OSError:
            pass
    assert not seen, f"processes {seen} have the database password on their command line"


@pytest.mark.skipif(not AS_ROOT, reason="per-learner uids and course groups need the hub to run as root")
def test_formgrader_uses_the_postgresql_gradebook_and_learners_cannot_read_its_url(hub):
    url_file = hub.state_dir / "grading" / COURSE / "gradebook.url"
    assert url_file.read_text().startswith("postgresql")
    assert hub.spawn("instructor", COURSE).status_code in (201, 202)
    got = requests.get(
        f"{hub.url}/user/instructor/formgrader/api/assignments",
        timeout=60,
        headers={"Authorization": f"token {hub.token_for('instructor')}"},
    )
    assert got.status_code == 200, got.text[:300]
    assert {a["name"]: a for a in got.json()}[ASSIGNMENT]["num_submissions"] == 3
    hub.stop_server("instructor")

    assert hub.spawn("alice", COURSE).status_code in (201, 202)
    probe = f"try:\n    open({str(url_file)!r}).read()\n    print('READ')\nexcept PermissionError:\n    print('denied')"
    assert hub.run_in_kernel("alice", probe).strip() == "denied"
    hub.stop_server("alice")
