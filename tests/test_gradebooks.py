"""Courses' gradebooks, grading groups and grading folders: SQLite, or a PostgreSQL schema and role per course.

The PostgreSQL cases run when AIFHUB_TEST_PG_URL is set (`.ci/run` sets it): a real server that
checks passwords, and a service role with CREATEROLE (scripts/test-postgres).
"""

import uuid

import pytest
from ledgerkit import PG_URL
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from aifhub.grading import gradebooks
from aifhub.grading.coursedir import venv_path_env
from aifhub.errors import Refusal
from aifhub.service.statuses import status_of
from aifhub.grading.manager import GradingManager
from aifhub.state.db import Database, sqlite_url

needs_pg = pytest.mark.skipif(not PG_URL, reason="AIFHUB_TEST_PG_URL not set")


@pytest.fixture
def nbgrader_path(monkeypatch):
    monkeypatch.setenv("PATH", venv_path_env()["PATH"])  # nbgrader runs `alembic` when it makes a gradebook


@pytest.mark.parametrize(
    "prefix, value, expected",
    [
        ("gradebook", "dl-basics", "gradebook_dl_basics"),
        ("aifhub_gradebook", "gpu-fundamentals", "aifhub_gradebook_gpu_fundamentals"),
        ("Gradebook", "a.b@c", "gradebook_a_b_c"),
    ],
)
def test_postgres_names_are_plain_identifiers(prefix, value, expected):
    assert gradebooks.pg_identifier(prefix, value) == expected


def test_long_names_are_cut_with_a_hash_and_stay_distinct():
    a = gradebooks.pg_identifier("aifhub_production_gradebook", "x" * 60 + "-one")
    b = gradebooks.pg_identifier("aifhub_production_gradebook", "x" * 60 + "-two")
    assert len(a) == len(b) == 63 and a != b


def test_course_groups_are_allocated_once_distinct_and_kept(tmp_path):
    url = sqlite_url(tmp_path / "aifhub.sqlite")
    grading = GradingManager(tmp_path / "state", Database(url))
    gids = [grading.course_gid(c) for c in ("dl-basics", "gpu-fundamentals", "dl-basics", "third")]
    assert gids == [400000, 400001, 400000, 400002]
    again = GradingManager(tmp_path / "state", Database(url), first_course_gid=500000)
    assert again.course_gid("gpu-fundamentals") == 400001  # kept across restarts and config changes
    assert again.course_gid("fourth") == 500000  # a raised first gid applies to new courses


def test_sqlite_gradebook_is_the_default_with_a_sqlite_service(tmp_path):
    grading = GradingManager(tmp_path / "state", Database(sqlite_url(tmp_path / "aifhub.sqlite")))
    assert grading.gradebook_kind == "sqlite"
    url, copy_from = grading._setup_gradebook("dl-basics")
    assert url == gradebooks.sqlite_url(tmp_path.resolve() / "state" / "grading" / "dl-basics") and copy_from is None


async def test_postgresql_gradebooks_without_a_postgresql_database_are_a_clear_503(tmp_path):
    grading = GradingManager(
        tmp_path / "state", Database(sqlite_url(tmp_path / "aifhub.sqlite")), gradebook="postgresql"
    )
    with pytest.raises(Refusal) as err:
        await grading.gradebook_url("dl-basics")
    assert status_of(err.value.reason) == 503 and "gradebook_admin_url" in err.value.message


def test_gradebook_admin_url_must_be_postgresql(tmp_path):
    with pytest.raises(Exception, match="must be a postgresql:// URL"):
        GradingManager(tmp_path, None, gradebook_admin_url="sqlite:///x.db")


@needs_pg
def test_a_course_role_reaches_its_gradebook_and_nothing_else(pg_database, nbgrader_path):
    from nbgrader.api import Gradebook

    service = Database(pg_database)  # the ledger's tables, in the public schema
    service.close()
    url = gradebooks.ensure_postgres(pg_database, "dl-basics")
    assert gradebooks.ensure_postgres(pg_database, "dl-basics", url) == url  # idempotent, same password
    parsed = make_url(url)
    assert parsed.username == f"{make_url(pg_database).database}_gradebook_dl_basics"
    assert parsed.password != make_url(pg_database).password and not parsed.query
    with Gradebook(url, "dl-basics") as gb:
        gb.update_or_create_student("alice")
    other = gradebooks.ensure_postgres(pg_database, "gpu-fundamentals")
    engine = create_engine(other)
    denied = {
        "another course's gradebook": "SELECT * FROM gradebook_dl_basics.student",
        "the ledger": "SELECT * FROM public.allocations",
        "learners' uids": "SELECT * FROM public.learner_uids",
        "new tables outside its schema": "CREATE TABLE public.sneaky (x int)",
        "new schemas": "CREATE SCHEMA sneaky",
        "password hashes": "SELECT * FROM pg_authid",
    }
    for what, sql in denied.items():
        with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.exec_driver_sql(sql)
            pytest.fail(f"the course role could reach {what}")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT current_schema()")) == "gradebook_gpu_fundamentals"
    engine.dispose()
    wrong = make_url(url).set(password="not-the-password")
    with pytest.raises(OperationalError, match="password authentication failed"):
        create_engine(wrong).connect()


@needs_pg
def test_a_lost_record_gets_a_new_password_and_the_old_one_stops_working(pg_database):
    first = gradebooks.ensure_postgres(pg_database, "lost-record")
    second = gradebooks.ensure_postgres(pg_database, "lost-record")  # no known URL: the record was lost
    assert make_url(first).password != make_url(second).password
    with create_engine(second).connect() as conn:
        assert conn.scalar(text("SELECT 1")) == 1
    with pytest.raises(OperationalError):
        create_engine(first).connect()


@needs_pg
def test_a_sqlite_gradebook_is_copied_once_into_postgresql(pg_database, nbgrader_path, tmp_path):
    from nbgrader.api import Gradebook

    src = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(src, "copied") as gb:
        gb.add_assignment("ps1")
        for student in ("alice", "bob"):
            gb.update_or_create_student(student, first_name=student.title())
    dst = gradebooks.ensure_postgres(pg_database, "copied")
    assert gradebooks.copy_gradebook(src, dst) == 4  # course, assignment, two students
    assert gradebooks.copy_gradebook(src, dst) is None  # never twice
    with Gradebook(dst, "copied") as gb:
        assert sorted(s.id for s in gb.students) == ["alice", "bob"]
        assert gb.find_student("bob").first_name == "Bob" and [a.name for a in gb.assignments] == ["ps1"]


@needs_pg
def test_a_service_role_without_createrole_gets_a_message_that_says_what_to_grant(pg_database):
    name, password = f"aifhub_weak_{uuid.uuid4().hex[:6]}", "weak-" + uuid.uuid4().hex
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    weak = make_url(pg_database).set(username=name, password=password).render_as_string(hide_password=False)
    try:
        with pytest.raises(gradebooks.GradebookError) as err:
            gradebooks.ensure_postgres(weak, "dl-basics-weak")
        message = str(err.value)
        assert "CREATEROLE" in message and f"ALTER ROLE {name} CREATEROLE" in message
        assert "gradebook = 'sqlite'" in message and password not in message
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE {name}")
        admin.dispose()


def test_the_gradebook_url_file_is_private(tmp_path):
    from aifhub.grading.coursedir import GradingDir

    gd = GradingDir(tmp_path, "dl-basics", "postgresql+psycopg://r:secret@db/x").ensure()
    gd.write_url()
    assert gd.url_file.read_text() == "postgresql+psycopg://r:secret@db/x\n"
    assert oct(gd.url_file.stat().st_mode & 0o777) == "0o600"
    assert "secret" not in (gd.root / "nbgrader_config.py").read_text()


def test_course_directories_left_in_the_state_move_to_grading_dir(tmp_path):
    state = tmp_path / "state"
    old = state / "grading" / "dl-basics"
    old.mkdir(parents=True)
    (old / "gradebook.db").write_text("grades")
    (state / "grading" / ".workers").mkdir()
    kept = tmp_path / "volume" / "courses" / "gpu-fundamentals"
    kept.mkdir(parents=True)
    (state / "grading" / "gpu-fundamentals").mkdir()
    (state / "grading" / "gpu-fundamentals" / "gradebook.db").write_text("older")
    grading = GradingManager(state, Database(sqlite_url(tmp_path / "aifhub.sqlite")), grading_dir=str(kept.parent))
    grading._move_old_course_dirs()
    assert (kept.parent / "dl-basics" / "gradebook.db").read_text() == "grades"
    assert not (kept / "gradebook.db").exists()  # what grading_dir already has is kept as it is
    assert not (state / "grading").exists() and (state / "grading.moved" / "dl-basics").is_dir()


def test_kubernetes_job_folders_must_be_on_the_grading_volume(tmp_path):
    with pytest.raises(ValueError, match="must lie on the grading volume"):
        GradingManager(
            tmp_path,
            None,
            backend="kubernetes",
            scratch_dir=str(tmp_path / "jobs"),
            kube_volume_root=str(tmp_path / "volume"),
        )
