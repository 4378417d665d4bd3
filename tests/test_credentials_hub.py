"""Credentials end to end on a real hub: real nbgrader grades decide completion, the learner claims their badge
through the hub's proxy, anyone fetches it and its verification page without logging in, an independent verifier
accepts it, and after the instructor revokes it both the page and the verifier refuse it."""

import pytest
import requests
from conftest import start_hub
from gradingkit import ASSIGNMENT, COURSE, blank_notebook, solution_notebook, submit, wait_jobs
from test_credentials import node_verify

SERVICE_ARGS = "--GradingManager.workers=2 --GradingManager.cell_timeout=5 --GradingManager.notebook_timeout=20"


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="none", env={"AIFHUB_SERVICE_ARGS": SERVICE_ARGS})
    yield hub
    hub.stop()


def public(hub, url):
    """GET a public page of the service through the hub's proxy, with no login at all."""
    path = url.split("/services/aifhub/", 1)[1]
    return requests.get(f"{hub.url}/services/aifhub/{path}", timeout=60, allow_redirects=False)


def test_graded_learner_claims_a_badge_that_verifies_until_revoked(hub):
    for name in ("grace", "heidi"):
        r = hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for(name), json={})
        assert r.status_code in (200, 201), r.text
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release").status_code == 200
    assert submit(hub, "grace", solution_notebook()).status_code == 201
    assert submit(hub, "heidi", blank_notebook()).status_code == 201
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.service(
        "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={"students": ["grace", "heidi"]}
    )
    assert r.status_code == 202, r.text
    jobs = wait_jobs(hub, [j["id"] for j in r.json()["jobs"]])
    assert jobs["grace"]["score"] == 10 and jobs["heidi"]["score"] == 0, jobs

    # the course's rule (course.yaml: ps1-digits at least 5 points), from the real gradebook
    grace = hub.service("GET", "me/credentials", token=hub.token_for("grace")).json()
    assert grace["progress"][COURSE]["complete"] is True, grace
    assert grace["progress"][COURSE]["figures"]["assignments"] == {ASSIGNMENT: 10.0}
    heidi = hub.service("POST", "me/credentials", token=hub.token_for("heidi"), json={"course": COURSE})
    assert heidi.status_code == 409 and f"assignment {ASSIGNMENT}" in heidi.json()["message"], heidi.text

    r = hub.service("POST", "me/credentials", token=hub.token_for("grace"), json={"course": COURSE})
    assert r.status_code == 201, r.text
    issued = r.json()
    doc = public(hub, issued["json"])
    assert doc.status_code == 200, doc.text
    credential = doc.json()
    assert credential["credentialSubject"]["identifier"][0]["identityHash"] == "grace"
    status_url = credential["credentialStatus"]["statusListCredential"]
    assert status_url.startswith(hub.url + "/services/aifhub/credentials/status/")  # the hub's own address
    status = public(hub, status_url).json()
    assert node_verify(credential, {status_url: status})["verified"] is True
    page = public(hub, issued["verify"])
    assert page.status_code == 200 and "<strong>Verified.</strong>" in page.text
    assert public(hub, issued["pdf"]).content.startswith(b"%PDF-")

    # heidi cannot revoke it; the course's instructor can
    cid = issued["id"]
    path = f"courses/{COURSE}/credentials/{cid}/revoke"
    assert hub.service("POST", path, token=hub.token_for("heidi"), json={}).status_code == 403
    r = hub.service("POST", path, token=hub.token_for("instructor"), json={"reason": "issued in error"})
    assert r.status_code == 200 and r.json()["revoked_by"] == "instructor", r.text
    assert "<strong>Not valid.</strong>" in public(hub, issued["verify"]).text
    status = public(hub, status_url).json()
    result = node_verify(credential, {status_url: status})
    assert result["verified"] is False and result["revoked"] is True, result
