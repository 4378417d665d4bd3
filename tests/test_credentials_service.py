"""Credentials through the service's real app (servicekit: its database, core and handlers; a fake hub): completion
evaluated from the ledger's sandbox sessions and sign-offs, issuing, the public JSON, PDF, status list and
verification page (no login), revocation by instructors only, and the independent verifier on what the service serves."""

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from servicekit import InProcessService
from test_credentials import node_verify

from aifhub.ledger.models import SandboxSession

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).parent.parent
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def cert_course(folder):
    """A course whose completion needs one of its two sessions attended and an instructor's sign-off, and one
    that also needs an assignment passed."""
    base = yaml.safe_load((REPO / "courses" / "dl-basics" / "course.yaml").read_text())
    sessions = [
        {"start": START.isoformat(), "end": (START + timedelta(hours=3)).isoformat(), "expected": 2},
        {
            "start": (START + timedelta(days=1)).isoformat(),
            "end": (START + timedelta(days=1, hours=3)).isoformat(),
            "expected": 2,
        },
    ]
    for cid, rule in (
        (
            "cert-course",
            {
                "sessions": 1,
                "sign_off": True,
                "skills": [
                    {
                        "name": "deep learning",
                        "url": "http://data.europa.eu/esco/skill/e465a154-93f3-4ee4-ae3a-1b2b4b1d6f51",
                    }
                ],
            },
        ),
        ("graded-course", {"assignments": {"ps1-digits": {"min_score": 5}}, "sessions": 1}),
    ):
        data = dict(base, id=cid, title=f"Course {cid}", enrollment="roster", roster=["ada", "bob", "eve"])
        data.update(sessions=sessions, completion=rule, instructors=["prof"])
        shutil.copytree(REPO / "courses" / "dl-basics", folder / cid)
        (folder / cid / "course.yaml").write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
async def svc(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    (root / "sandbox_images").symlink_to(REPO / "sandbox_images")
    courses = root / "courses"
    cert_course(courses)
    service = await InProcessService(tmp_path_factory.mktemp("service"), courses=courses, grading=False).start()
    assert not service.core.broken_courses(), service.core.broken_courses()

    def attend(s):  # what a learner's sandbox leaves in the ledger: ada's ran during the first session
        s.add(
            SandboxSession(
                user="ada",
                course_id="cert-course",
                state="ended",
                started_at=START + timedelta(hours=1),
                ended_at=START + timedelta(hours=2, minutes=30),
                charged_gpu_ms=1_800_000,
            )
        )
        s.add(
            SandboxSession(
                user="bob",
                course_id="cert-course",
                state="ended",
                started_at=START - timedelta(days=3),
                ended_at=START - timedelta(days=3, hours=-1),
            )
        )

    await service.db.run(attend)
    yield service
    await service.stop()


@pytest.fixture(scope="module")
def tokens(svc):
    return {name: svc.token(name, admin=name == "admin") for name in ("admin", "prof", "ada", "bob", "eve", "stranger")}


async def test_progress_toward_completion(svc, tokens):
    r = await svc.api("GET", "me/credentials", tokens["ada"])
    assert r.code == 200, r.body
    mine = r.json()
    assert mine["credentials"] == []
    cert = mine["progress"]["cert-course"]
    assert cert["complete"] is False
    met = {c["kind"]: c["met"] for c in cert["conditions"]}
    assert met == {"sessions": True, "sign_off": False}
    assert cert["figures"]["hours"] == 1.5 and cert["figures"]["gpu_hours"] == 0.5
    bob = (await svc.api("GET", "me/credentials", tokens["bob"])).json()["progress"]["cert-course"]
    assert {c["kind"]: c["have"] for c in bob["conditions"]}["sessions"] == 0  # his sandbox ran before the sessions


async def test_a_learner_cannot_claim_before_completing(svc, tokens):
    r = await svc.api("POST", "me/credentials", tokens["ada"], body={"course": "cert-course"})
    assert r.code == 409 and "sign-off" in r.json()["message"]
    r = await svc.api("POST", "me/credentials", tokens["ada"], body={"course": "graded-course"})
    assert r.code == 409 and "assignment ps1-digits" in r.json()["message"]
    r = await svc.api("POST", "me/credentials", tokens["stranger"], body={"course": "cert-course"})
    assert r.code == 403


async def test_only_instructors_sign_off(svc, tokens):
    r = await svc.api("POST", "courses/cert-course/credentials", tokens["eve"], body={"user": "ada"})
    assert r.code == 403
    r = await svc.api("POST", "courses/cert-course/credentials", tokens["prof"], body={"user": "not a name"})
    assert r.code == 400
    r = await svc.api("POST", "courses/cert-course/credentials", tokens["prof"], body={"user": "stranger"})
    assert r.code == 404


async def test_sign_off_issues_a_verifiable_credential(svc, tokens):
    r = await svc.api("POST", "courses/cert-course/credentials", tokens["prof"], body={"user": "ada"})
    assert r.code == 200, r.body
    out = r.json()
    assert out["signed_off_by"] == "prof" and out["progress"]["complete"] is True
    cred = out["credential"]
    assert cred["user"] == "ada" and cred["revoked_at"] is None
    # signing off bob, who attended no session, issues nothing
    r = await svc.api("POST", "courses/cert-course/credentials", tokens["prof"], body={"user": "bob"})
    assert r.json()["credential"] is None and r.json()["progress"]["complete"] is False
    # claiming again gives the same credential
    again = await svc.api("POST", "me/credentials", tokens["ada"], body={"course": "cert-course"})
    assert again.code == 201 and again.json()["id"] == cred["id"]
    mine = (await svc.api("GET", "me/credentials", tokens["ada"])).json()["credentials"]
    assert [c["id"] for c in mine] == [cred["id"]]

    # the public documents, no login
    doc = await svc.fetch("GET", f"credentials/{cred['id']}.json")
    assert doc.code == 200 and doc.headers["Access-Control-Allow-Origin"] == "*"
    credential = doc.json()
    assert credential["id"] == f"urn:uuid:{cred['id']}" and "OpenBadgeCredential" in credential["type"]
    assert credential["credentialSubject"]["achievement"]["alignment"][0]["targetFramework"] == "ESCO"
    assert "GPU-hours: 0.50" in credential["evidence"][-1]["narrative"]
    status_url = credential["credentialStatus"]["statusListCredential"]
    status = await svc.fetch("GET", status_url.split("/services/aifhub/", 1)[1])
    assert status.code == 200 and status.json()["type"][1] == "BitstringStatusListCredential"
    page = await svc.fetch("GET", f"verify/{cred['id']}")
    assert page.code == 200 and b"<strong>Verified.</strong>" in page.body and b"ada" in page.body
    pdf = await svc.fetch("GET", f"credentials/{cred['id']}.pdf")
    assert pdf.code == 200 and pdf.headers["Content-Type"] == "application/pdf" and pdf.body.startswith(b"%PDF-")
    assert len(pdf.body) > 1500 and pdf.body.count(b"/Subtype /Image") == 1  # the QR code

    # an independent verifier accepts what the service serves
    result = node_verify(credential, {status_url: status.json()})
    assert result["verified"] is True and result["revoked"] is False, result
    svc.issued = (cred["id"], credential, status_url)


async def test_revocation_by_instructors_only_fails_verification_everywhere(svc, tokens):
    cid, credential, status_url = svc.issued
    path = f"courses/cert-course/credentials/{cid}/revoke"
    for who in ("ada", "eve", "stranger"):
        assert (await svc.api("POST", path, tokens[who], body={"reason": "x"})).code == 403
    assert (await svc.api("POST", f"courses/graded-course/credentials/{cid}/revoke", tokens["prof"])).code == 404
    r = await svc.api("POST", path, tokens["prof"], body={"reason": "plagiarism in the final project"})
    assert r.code == 200 and r.json()["revoked_by"] == "prof"
    page = await svc.fetch("GET", f"verify/{cid}")
    assert page.code == 200 and b"<strong>Not valid.</strong>" in page.body and b"revoked" in page.body
    status = (await svc.fetch("GET", status_url.split("/services/aifhub/", 1)[1])).json()
    result = node_verify(credential, {status_url: status})
    assert result["verified"] is False and result["revoked"] is True, result
    # the learner may be issued a new one later (after a new sign-off), not by replaying the old
    listing = (await svc.api("GET", "courses/cert-course/credentials", tokens["prof"])).json()
    assert [c["revoked_by"] for c in listing["credentials"]] == ["prof"]
    assert listing["progress"]["ada"]["complete"] is True


async def test_public_endpoints_answer_bad_ids_with_404(svc):
    for path in (
        "credentials/00000000-0000-4000-8000-000000000000.json",
        "credentials/00000000-0000-4000-8000-000000000000.pdf",
        "verify/00000000-0000-4000-8000-000000000000",
        "credentials/status/z6MkjZRZv3aez3r18pB1RBFJR1kwUVJ5jHt92JmQwXbd5hwi",
        "credentials/../../etc/passwd.json",
        "did.json",
    ):
        r = await svc.fetch("GET", path)
        assert r.code == 404, path
    assert (await svc.api("GET", "courses/cert-course/credentials", None)).code == 403


async def test_pages_completion_profile_and_training_report(svc, tokens):
    page = await svc.fetch("GET", "courses/cert-course/completion", tokens["bob"])
    assert page.code == 200 and b"Your progress" in page.body and b"sessions attended" in page.body
    page = await svc.fetch("GET", "courses/cert-course/completion", tokens["prof"])
    assert page.code == 200 and b'id="learners"' in page.body and b"ada" in page.body
    assert (await svc.fetch("GET", "courses/cert-course/completion", tokens["stranger"])).code == 404

    home = await svc.fetch("GET", "", tokens["stranger"])  # (the kit runs no grading: a learner of no course)
    assert home.code == 200 and b'id="profile-prompt"' in home.body
    form = await svc.fetch("GET", "me/profile", tokens["eve"])
    assert form.code == 200 and b'<select id="sector"' in form.body and b"Prefer not to say" in form.body
    assert (await svc.fetch("GET", "admin/training", tokens["prof"])).code == 403
    report = await svc.fetch("GET", "admin/training", tokens["admin"], query={"format": "json"})
    assert report.code == 200
    rows = {(r["dimension"], r["group"]): r for r in report.json()["rows"]}
    assert rows[("total", "all")]["trainees"] is None  # two learners so far: under five, suppressed
    html = await svc.fetch("GET", "admin/training", tokens["admin"])
    assert html.code == 200 and b"By course" in html.body and b"&lt;5" in html.body


async def test_training_report_api_is_for_admins(svc, tokens):
    assert (await svc.api("GET", "training/report", tokens["prof"])).code == 403
    r = await svc.api("GET", "training/report", tokens["admin"], query={"format": "csv"})
    assert r.code == 200 and r.body.decode().startswith("dimension,group,trainees")
    assert (await svc.api("GET", "training/report", tokens["admin"], query={"format": "xml"})).code == 400
