"""The training report: figures from the ledger's sandbox sessions, credentials and learners' declarations, by
course, kind, scheduled session, country, sector and gender; any row about fewer than five people suppressed."""

import csv
import io
import json
import shutil
from pathlib import Path
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import yaml

from aifhub.catalog import load_course, load_images
from aifhub.cli.main import main
from aifhub.credentials.issuer import CredentialIssuer
from aifhub.credentials import report, store
from aifhub.credentials.models import Credential
from aifhub.ledger.models import SandboxSession
from aifhub.state.db import Database, sqlite_url

T = datetime(2026, 12, 1, 9, tzinfo=UTC)
WINDOW = SimpleNamespace(start=T, end=T + timedelta(hours=3))
CATALOG = SimpleNamespace(
    courses={
        "big": SimpleNamespace(kind="workshop", sessions=(WINDOW,)),
        "small": SimpleNamespace(kind="mooc", sessions=()),
    }
)


def fill(s):
    # 8 learners in "big" (1 h each, 0.5 GPU-h; 6 of them during its session), 2 in "small"
    for i in range(8):
        start = T + timedelta(hours=1) if i < 6 else T - timedelta(days=2)
        s.add(
            SandboxSession(
                user=f"u{i}",
                course_id="big",
                state="ended",
                started_at=start,
                ended_at=start + timedelta(hours=1),
                charged_gpu_ms=1_800_000,
            )
        )
    for i in range(2):
        s.add(
            SandboxSession(
                user=f"u{i}", course_id="small", state="ended", started_at=T, ended_at=T + timedelta(hours=2)
            )
        )
    for i in range(6):  # 6 completions in "big", one revoked
        s.add(
            Credential(
                id=f"00000000-0000-4000-8000-00000000000{i}",
                user=f"u{i}",
                course_id="big",
                status_index=i,
                status_list="z",
                document="{}",
                revoked_at=T if i == 5 else None,
            )
        )
    for i in range(8):
        report.declare(
            s, f"u{i}", "DE" if i < 5 else "FR", "academia" if i < 6 else "sme", "female" if i % 2 else "male"
        )


@pytest.fixture
def state(tmp_path):
    db = Database(sqlite_url(tmp_path / "aifhub.sqlite"), checkpointer=False)
    db.call(fill)
    yield tmp_path, db
    db.close()


def by(rows):
    return {(r["dimension"], r["group"]): r for r in rows}


def test_figures_before_suppression(state):
    _, db = state
    rows = by(report.compute(db.call(report.gather), CATALOG))
    total = rows[("total", "all")]
    assert total == {
        "dimension": "total",
        "group": "all",
        "trainees": 8,
        "participations": 10,
        "completions": 5,
        "hours": 12.0,
        "gpu_hours": 4.0,
    }
    assert rows[("course", "big")]["completions"] == 5 and rows[("course", "small")]["trainees"] == 2
    assert rows[("kind", "workshop")]["participations"] == 8
    assert rows[("session", f"big {T.isoformat()}")]["trainees"] == 6
    assert rows[("country", "DE")]["trainees"] == 5 and rows[("country", "FR")]["trainees"] == 3
    assert rows[("sector", "academia")]["trainees"] == 6 and rows[("gender", "male")]["trainees"] == 4


def test_cells_under_five_people_are_suppressed(state):
    _, db = state
    rows = by(report.report(db.call(report.gather), CATALOG))
    assert rows[("course", "small")] == {"dimension": "course", "group": "small", **dict.fromkeys(report.FIELDS[2:])}
    assert rows[("country", "FR")]["trainees"] is None and rows[("gender", "male")]["hours"] is None
    assert rows[("country", "DE")]["trainees"] == 5  # five is enough
    assert rows[("sector", "academia")]["completions"] == 5
    for row in rows.values():
        counted = [row[k] for k in ("trainees", "participations") if row[k] is not None]
        assert all(n >= report.MIN_CELL for n in counted), row
        assert row["completions"] is None or row["completions"] == 0 or row["completions"] >= report.MIN_CELL
    text = report.to_csv(list(rows.values()))
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert {r["trainees"] for r in parsed if r["group"] == "small"} == {"<5"}


def test_declarations_are_checked_and_deletable(state):
    _, db = state
    assert report.check_declaration(" de ", "", "") == ("DE", None, None)
    for bad in (("Germany", None, None), (None, "farming", None), (None, None, "x")):
        with pytest.raises(ValueError):
            report.check_declaration(*bad)
    assert db.call(report.declaration, "u1")["country"] == "DE"
    db.call(report.forget, "u1")
    assert db.call(report.declaration, "u1") | {"declared_at": None} == dict.fromkeys(
        ("country", "sector", "gender", "declared_at")
    )
    assert db.call(report.declaration, "never-asked") is None
    assert store  # the credential units share the database


def test_cli_training_report(state, capsys, monkeypatch):
    folder, _ = state
    monkeypatch.delenv("AIFHUB_DB_URL", raising=False)
    monkeypatch.delenv("AIFHUB_URL", raising=False)
    assert (
        main(["training", "report", "--state-dir", str(folder), "--courses", str(folder / "none"), "--format", "json"])
        == 0
    )
    rows = by(json.loads(capsys.readouterr().out)["rows"])
    assert rows[("total", "all")]["trainees"] == 8 and rows[("course", "small")]["trainees"] is None
    assert (
        main(["training", "report", "--state-dir", str(folder), "--courses", str(folder / "none"), "--format", "csv"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ",".join(report.FIELDS) and "<5" in out


def test_cli_rotates_the_issuer_key(state, capsys, monkeypatch):
    folder, _ = state
    monkeypatch.delenv("AIFHUB_DB_URL", raising=False)
    first = CredentialIssuer(folder).keys.current.fingerprint
    assert main(["credentials", "rotate-key", "--state-dir", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["retired"] == first and out["current"] != first
    assert CredentialIssuer(folder).keys.current.fingerprint == out["current"]


def test_completion_rules_are_checked_when_courses_load(tmp_path):
    repo = Path(__file__).parent.parent
    shutil.copytree(repo / "courses" / "dl-basics", tmp_path / "c")
    data = yaml.safe_load((tmp_path / "c" / "course.yaml").read_text())
    data["id"] = "c"
    data["completion"] = {"assignments": {"nope": {"min_score": 1}}, "sessions": 2}
    (tmp_path / "c" / "course.yaml").write_text(yaml.safe_dump(data))
    course, problems = load_course(tmp_path / "c", load_images(repo / "sandbox_images"))
    fields = {p.field for p in problems}
    assert course is None and {"completion.assignments.nope", "completion.sessions"} <= fields, problems
    data["completion"] = {"assignments": {"ps1-digits": {"min_score": 1}}, "sign_off": True}
    (tmp_path / "c" / "course.yaml").write_text(yaml.safe_dump(data))
    course, problems = load_course(tmp_path / "c", load_images(repo / "sandbox_images"))
    assert not problems and course.completion["sign_off"] is True
