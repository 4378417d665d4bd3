"""The service's handlers in process (its real app, database and core; a fake hub): who may call what,
what the answers say, and what admission, enrolment and metering record."""

import asyncio
from dataclasses import replace

import pytest
from servicekit import InProcessService

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
async def svc(tmp_path_factory):
    service = await InProcessService(tmp_path_factory.mktemp("service"), gpus="0").start()
    yield service
    await service.stop()


@pytest.fixture(scope="module")
def tokens(svc):
    return {
        name: svc.token(name, admin=name == "admin")
        for name in ("admin", "instructor", "learner1", "learner2", "stranger", "meterme", "meterboth")
    }


async def test_me_lists_the_callers_courses_with_quota(svc, tokens):
    r = await svc.api("GET", "me", tokens["learner1"])
    assert r.code == 200
    me = r.json()
    assert me["name"] == "learner1" and me["admin"] is False
    courses = {c["id"]: c for c in me["courses"]}
    assert set(courses) == {"dl-basics", "gpu-fundamentals"}  # on the roster of the GPU course
    gpu = courses["gpu-fundamentals"]
    assert gpu["can_start"] is True and gpu["gpu_free"] == 1
    assert [q["scope"] for q in gpu["quota"]] == ["allocation", "learner"]
    assert gpu["quota"][1]["limit_hours"] == 4 and gpu["quota"][1]["resets_at"]


async def test_roster_courses_stay_hidden_from_those_not_on_them(svc, tokens):
    me = (await svc.api("GET", "me", tokens["stranger"])).json()
    assert [c["id"] for c in me["courses"]] == ["dl-basics"]


@pytest.mark.parametrize(
    "headers, status",
    [
        ({}, 403),  # no token at all
        ({"Authorization": "token not-a-token"}, 403),
    ],
)
async def test_the_api_wants_a_hub_token(svc, headers, status):
    r = await svc.fetch("GET", "api/v1/me", headers=headers)
    assert r.code == status


async def test_a_token_without_access_to_the_service_is_refused(svc):
    r = await svc.api("GET", "me", svc.token("scopeless", scopes=["self"]))
    assert r.code == 403


async def test_open_enrolment_puts_the_learner_in_the_nbgrader_group(svc, tokens):
    r = await svc.api("POST", "courses/dl-basics/enrol", tokens["learner2"])
    assert r.code == 201 and r.json() == {"course": "dl-basics", "enrolled": True}
    assert "learner2" in svc.hub.groups["nbgrader-dl-basics"]
    r = await svc.api("POST", "courses/gpu-fundamentals/enrol", tokens["stranger"])
    assert r.code == 403 and r.json()["reason"] == "roster" and "roster" in r.json()["message"]
    r = await svc.api("POST", "courses/no-such-course/enrol", tokens["stranger"])
    assert r.code == 404 and r.json()["status"] == 404


async def test_instructors_edit_their_roster_and_nobody_else(svc, tokens):
    r = await svc.api(
        "POST", "courses/gpu-fundamentals/roster", tokens["instructor"], body={"users": ["added1", "bad name!"]}
    )
    assert r.code == 400 and "bad name!" in r.json()["message"]
    r = await svc.api("POST", "courses/gpu-fundamentals/roster", tokens["instructor"], body={"users": ["added1"]})
    assert r.code == 201 and r.json() == {"added": ["added1"]}
    assert "added1" in svc.hub.groups["nbgrader-gpu-fundamentals"]
    roster = (await svc.api("GET", "courses/gpu-fundamentals/roster", tokens["instructor"])).json()["roster"]
    assert {"user": "added1", "how": "added by an instructor", "name": "", "email": ""} in roster  # no login named them
    assert (
        await svc.api("POST", "courses/gpu-fundamentals/roster", tokens["learner1"], body={"users": ["x"]})
    ).code == 403
    r = await svc.api("DELETE", "courses/gpu-fundamentals/roster", tokens["instructor"], query={"user": "learner1"})
    assert r.code == 409 and "course.yaml" in r.json()["message"]  # listed in the course file
    r = await svc.api("DELETE", "courses/gpu-fundamentals/roster", tokens["instructor"], query={"user": "added1"})
    assert r.code == 204
    assert "added1" not in svc.hub.groups["nbgrader-gpu-fundamentals"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "allocations"),
        ("POST", "allocations"),
        ("GET", "allocations/EHPC-AIF-2026-PG01"),
        ("POST", "allocations/EHPC-AIF-2026-PG01/topup"),
        ("GET", "pool"),
        ("POST", "catalog/reload"),
        ("GET", "metrics"),
        ("GET", "usage?user=learner2"),
        ("GET", "usage?course=gpu-fundamentals&user=learner2"),
    ],
)
async def test_admin_endpoints_refuse_learners_server_side(svc, tokens, method, path):
    r = await svc.fetch(
        method,
        ("" if path == "metrics" else "api/v1/") + path,
        token=tokens["learner1"],
        body={"id": "X", "gpu_hours": 1} if method == "POST" else None,
    )
    assert r.code == 403, r.body


async def test_admins_record_allocations_and_bad_input_gets_a_clear_400(svc, tokens):
    admin = tokens["admin"]
    r = await svc.api("POST", "allocations", admin, body={"id": "API-1", "gpu_hours": 10, "end": "2027-01-31"})
    assert r.code == 201 and r.json()["granted_gpu_hours"] == 10 and r.json()["remaining_gpu_hours"] == 10
    r = await svc.api("POST", "allocations", admin, body={"id": "API-1", "gpu_hours": 10})
    assert r.code == 409 and r.json()["reason"] == "exists"
    for body, words in (
        ({"id": "API-2", "gpu_hours": "many"}, "number"),
        ({"id": "API-2", "gpu_hours": 1, "end": "soon"}, "YYYY-MM-DD"),
        ({"id": "../x", "gpu_hours": 1}, "not valid"),
    ):
        r = await svc.api("POST", "allocations", admin, body=body)
        assert r.code == 400 and words in r.json()["message"], r.body
    r = await svc.api("POST", "allocations", admin, raw=b"{not json", headers={"Content-Type": "application/json"})
    assert r.code == 400 and "JSON" in r.json()["message"]
    r = await svc.api("POST", "allocations/API-1/topup", admin, body={"gpu_hours": 5})
    assert r.code == 200 and r.json()["granted_gpu_hours"] == 15
    assert (await svc.api("GET", "allocations/NOPE", admin)).code == 404


async def test_internal_endpoints_want_the_internal_token(svc, tokens):
    for token in (None, tokens["admin"]):
        r = await svc.fetch("POST", "api/v1/internal/admit", token=token, body={"user": "x", "course": "dl-basics"})
        assert r.code == 403


async def test_admission_claims_the_only_gpu_and_release_frees_it(svc):
    first = await svc.internal("POST", "admit", {"user": "learner1", "server_name": "", "course": "gpu-fundamentals"})
    assert first.code == 201, first.body
    admission = first.json()
    assert [d["id"] for d in admission["devices"]] == ["0"] and admission["role"] == "learner"
    second = await svc.internal("POST", "admit", {"user": "learner2", "server_name": "", "course": "gpu-fundamentals"})
    assert second.code == 202, second.body  # every GPU busy: in the waitlist
    entry = second.json()["waiting"]
    assert entry["state"] == "waiting" and entry["position"] == 1 and entry["estimate_s"] > 0
    offers = (await svc.internal("GET", "offers", query={"user": "learner2", "admin": "0"})).json()
    gpu = next(c for c in offers["courses"] if c["id"] == "gpu-fundamentals")
    assert gpu["can_start"] is True and gpu["gpu_wait"] is True and gpu["gpu_free"] == 0
    r = await svc.internal("POST", "release", {"user": "learner1", "server_name": "", "reason": "stopped"})
    assert r.json() == {"released": admission["session_id"]}
    held = (await svc.internal("GET", f"waitlist/{entry['id']}", query={"wait": "0"})).json()["entry"]
    assert held["state"] == "offered" and held["devices"] == ["0"]  # held for learner2 at once
    other = await svc.internal("POST", "admit", {"user": "learner1", "server_name": "", "course": "gpu-fundamentals"})
    assert other.code == 202  # the held device is not for anyone else
    again = await svc.internal("POST", "admit", {"user": "learner2", "server_name": "", "course": "gpu-fundamentals"})
    assert again.code == 201 and [d["id"] for d in again.json()["devices"]] == ["0"]
    await svc.internal("DELETE", f"waitlist/{other.json()['waiting']['id']}", query={"user": "learner1"})
    await svc.internal("POST", "release", {"user": "learner2", "server_name": "", "reason": "stopped"})


@pytest.mark.parametrize(
    "body, status, reason",
    [
        ({"user": "instructor"}, 400, "no-course"),  # no course named, and two are theirs
        ({"user": "learner1", "course": "no-such"}, 404, "unknown-course"),
        ({"user": "stranger", "course": "gpu-fundamentals"}, 403, "not-enrolled"),
    ],
)
async def test_admission_refusals_say_why(svc, body, status, reason):
    r = await svc.internal("POST", "admit", body)
    assert r.code == status and r.json()["reason"] == reason and r.json()["message"]


async def test_metering_charges_what_the_hub_runs_and_settles_what_it_no_longer_does(svc, tokens):
    await svc.internal("POST", "admit", {"user": "meterme", "server_name": "", "course": "dl-basics"})
    await svc.internal("POST", "admit", {"user": "meterboth", "server_name": "", "course": "dl-basics"})
    svc.hub.running = {("meterme", ""), ("meterboth", "")}
    await asyncio.sleep(0.05)
    result = await svc.core.metering.meter()
    assert result.charged >= 2 and not result.settled
    svc.hub.running = {("meterboth", "")}
    svc.core.metering.settle_grace_s = 0
    result = await svc.core.metering.meter()
    assert len(result.settled) == 1
    usage = (await svc.api("GET", "usage", tokens["meterme"])).json()["sessions"]
    assert [(u["user"], u["state"]) for u in usage] == [("meterme", "ended")]
    assert usage[0]["cpu_ms"] >= 2 * 50 and usage[0]["events"] == 1  # 2 cores for at least 50 ms


async def test_fifty_admissions_at_once_never_overdraw_an_allocation(svc, tokens):
    admin = tokens["admin"]
    assert (await svc.api("POST", "allocations", admin, body={"id": "FIVE", "gpu_hours": 5})).code == 201
    course = svc.core.catalog.get("gpu-fundamentals")
    svc.core.catalog.courses["gpu-five"] = replace(
        course,
        id="gpu-five",
        allocation="FIVE",
        enrollment="open",
        quota=None,
        sandbox=replace(course.sandbox, max_session="1h"),
    )
    saved_inventory = svc.core.admission.inventory
    svc.core.admission.inventory = None  # the cluster places GPUs: only the allocation limits admissions
    try:
        answers = await asyncio.gather(
            *(svc.internal("POST", "admit", {"user": f"storm{i}", "course": "gpu-five"}) for i in range(50))
        )
    finally:
        svc.core.admission.inventory = saved_inventory
        del svc.core.catalog.courses["gpu-five"]
    codes = sorted(r.code for r in answers)
    assert codes.count(201) == 5 and codes.count(403) == 45, codes  # five one-hour holds fill it
    shown = (await svc.api("GET", "allocations/FIVE", admin)).json()
    assert shown["held_gpu_hours"] == pytest.approx(5) and shown["remaining_gpu_hours"] == pytest.approx(0)
    for r in answers:
        if r.code == 403:
            assert r.json()["reason"] == "allocation-exhausted" and "FIVE" in r.json()["message"]


async def test_a_nearly_full_disk_refuses_starts_and_stops_the_biggest_home(svc):
    from aifhub.service.disk_watch import DiskWatch, folder_bytes

    admitted = await svc.internal("POST", "admit", {"user": "filler", "server_name": "", "course": "dl-basics"})
    assert admitted.code == 201, admitted.body
    home = svc.state / "work" / "filler"
    home.mkdir(parents=True, exist_ok=True)
    (home / "data.bin").write_bytes(b"z" * 3_000_000)
    (home / "elsewhere").symlink_to("/usr")  # not followed, not counted
    assert 3_000_000 <= folder_bytes(home) < 4_000_000
    watch = DiskWatch(svc.core.db, svc.core.courses, svc.hub, svc.state, reserve="999T")  # more than any disk has
    svc.core.admission.disk = watch
    try:
        await watch.step()
        assert ("filler", "") in svc.hub.stopped  # the biggest home's sandbox, so that the disk stops filling
        assert "disk is nearly full" in watch.notices["filler"]
        refused = await svc.internal("POST", "admit", {"user": "another", "server_name": "", "course": "dl-basics"})
        assert refused.code == 503 and refused.json()["reason"] == "disk-full", refused.body
        assert "disk is nearly full" in refused.json()["message"]
        watch.reserve = "1K"
        await watch.step()
        assert not watch.full
    finally:
        svc.core.admission.disk = None
        await svc.internal("POST", "release", {"user": "filler", "server_name": "", "reason": "stopped"})
