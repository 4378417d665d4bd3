"""Where each course's nbgrader gradebook lives: a SQLite file, or a PostgreSQL schema of its own.

* SQLite (the default while the service's database is SQLite): ``gradebook.db`` in the course's
  grading directory.
* PostgreSQL (when the service's database is PostgreSQL): in the service's database, a schema per
  course (``gradebook_<course>``) owned by a login role of its own (``<database>_gradebook_<course>``)
  with a random password and that schema as its only search path. nbgrader (the grading workers,
  instructors' formgrader) connects as that role, so it reaches its course's gradebook and nothing
  else, and the service's own credentials never leave the service. Creating the roles needs a
  PostgreSQL role with CREATEROLE (or a superuser) for the service.

The service keeps each course's URL in its database (``grading_courses``) and writes a copy to
``gradebook.url`` in the course directory for formgrader; it never reads that copy back.
"""

import hashlib
import re
import secrets

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

URL_FILE = "gradebook.url"
PG_DRIVER = "postgresql+psycopg"  # aifhub's own dependency: installed in every sandbox image


class GradebookError(Exception):
    """A gradebook that cannot be set up, with a message that says what to change."""


def is_postgres(url):
    return str(url).startswith("postgresql")


def sqlite_url(course_root):
    # a busy timeout: parallel graders write grades into one SQLite gradebook
    return f"sqlite:///{course_root}/gradebook.db?timeout=60"


def pg_identifier(prefix, value, limit=63):
    """``prefix_value`` as a PostgreSQL identifier: [a-z0-9_], at most ``limit`` bytes (hashed when longer)."""
    name = re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{value}".lower())
    if len(name) > limit:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[: limit - 11]}_{digest}"
    return name


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value):
    return "'" + value.replace("'", "''") + "'"


def postgres_names(admin_url, course_id):
    """``(role, schema)`` of a course's gradebook; the role names the database (roles are cluster-wide)."""
    database = make_url(admin_url).database or "postgres"
    return pg_identifier(f"{database}_gradebook", course_id), pg_identifier("gradebook", course_id)


def ensure_postgres(admin_url, course_id, known_url=None):
    """Create (or repair) a course's gradebook role and schema; return the URL nbgrader connects with.

    Idempotent: with ``known_url`` (the URL handed out before) the role keeps its password; without
    one, the role gets a new password (so a lost record never locks the course out).
    """
    role, schema = postgres_names(admin_url, course_id)
    known = make_url(known_url) if known_url and is_postgres(known_url) else None
    password = known.password if known is not None and known.username == role and known.password else None
    password = password or secrets.token_urlsafe(24)
    admin = make_url(admin_url)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    r, s = quote_ident(role), quote_ident(schema)
    try:
        with engine.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}) is not None
            attributes = "" if exists else " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            conn.exec_driver_sql(
                f"{'ALTER' if exists else 'CREATE'} ROLE {r} LOGIN{attributes} PASSWORD {quote_literal(password)}"
            )
            # creating a schema owned by the role needs membership in it (PostgreSQL 15 and 16 alike)
            member = conn.scalar(text("SELECT pg_has_role(current_user, :r, 'USAGE')"), {"r": role})
            if not member:
                conn.exec_driver_sql(f"GRANT {r} TO CURRENT_USER")
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {s} AUTHORIZATION {r}")
            conn.exec_driver_sql(f"ALTER SCHEMA {s} OWNER TO {r}")
            conn.exec_driver_sql(f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC")
            conn.exec_driver_sql(f"ALTER ROLE {r} SET search_path = {s}")
            conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {quote_ident(admin.database)} TO {r}")
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise GradebookError(
            f"The gradebook of course '{course_id}' is kept in PostgreSQL, but its role {role!r} and schema "
            f"{schema!r} could not be set up ({detail}). Give the service's database role CREATEROLE "
            f"(ALTER ROLE {admin.username or 'aifhub'} CREATEROLE), or keep gradebooks in SQLite "
            "(c.GradingManager.gradebook = 'sqlite')."
        ) from exc
    finally:
        engine.dispose()
    return admin.set(drivername=PG_DRIVER, username=role, password=password, query={}).render_as_string(
        hide_password=False
    )


def copy_gradebook(src_url, dst_url):
    """Copy every row of an nbgrader gradebook into another, empty one (SQLite to PostgreSQL).

    One transaction on the destination: it holds all of the source or nothing. Returns the number of
    rows copied, or None when the destination already holds a gradebook (copied before).
    """
    from nbgrader.api import Base  # the worker's import: nbgrader's own tables, in dependency order

    src, dst = create_engine(src_url), create_engine(dst_url)
    try:
        Base.metadata.create_all(dst)
        copied = 0
        with src.connect() as a, dst.begin() as b:
            if any(b.execute(table.select().limit(1)).first() for table in Base.metadata.sorted_tables):
                return None
            for table in Base.metadata.sorted_tables:
                rows = [dict(row._mapping) for row in a.execute(table.select())]
                if rows:
                    b.execute(table.insert(), rows)
                    copied += len(rows)
            version = a.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            b.exec_driver_sql("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)")
            b.exec_driver_sql("DELETE FROM alembic_version")
            if version:
                b.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": version})
        return copied
    finally:
        src.dispose()
        dst.dispose()
