"""The live workshop's REST API in process (the service's real app and database; the hub's sharing recorded by the
fake hub): raising and lowering hands, taking and asking, the learner's consent and its end, the time limit, the
audit log, announcements; and every refusal (403 for outsiders and other courses' helpers, 404, 400)."""

import asyncio
import base64
import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from servicekit import REPO, InProcessService

pytestmark = pytest.mark.asyncio(loop_scope="module")
COURSE, OTHER = "dl-basics", "dl-other"


def _courses(folder):
    """The example courses, with helpers: ``helper1`` in dl-basics, ``helper2`` in a second course."""
    shutil.copytree(REPO / "courses", folder)
    (folder.parent / "sandbox_images").symlink_to(REPO / "sandbox_images")
    path = folder / COURSE / "course.yaml"
    data = yaml.safe_load(path.read_text())
    data["helpers"] = ["helper1"]
    now = datetime.now(timezone.utc)
    data["sessions"] = [
        {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat(), "expected": 5},
        {
            "start": (now + timedelta(days=1)).isoformat(),
            "end": (now + timedelta(days=1, hours=2)).isoformat(),
            "expected": 5,
        },
    ]
    path.write_text(yaml.safe_dump(data))
    shutil.copytree(folder / COURSE, folder / OTHER)
    data.update(id=OTHER, title="Another course", helpers=["helper2"], sessions=[])
    (folder / OTHER / "course.yaml").write_text(yaml.safe_dump(data))
    return folder


@pytest.fixture(scope="module")
async def svc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classroom")
    service = await InProcessService(folder, courses=_courses(folder / "courses")).start()
    yield service
    await service.stop()


@pytest.fixture(scope="module")
def t(svc):
    names = ("admin", "instructor", "helper1", "helper2", "ana", "ben", "stranger")
    return {name: svc.token(name, admin=name == "admin") for name in names}


async def test_helpers_are_in_the_schema_and_the_model(svc):
    assert not svc.core.broken_courses()
    course = svc.core.catalog.get(COURSE)
    assert course.helpers == ("helper1",) and course.is_helper("helper1") and not course.is_instructor("helper1")
    assert course.is_staff("instructor") and course.is_staff("helper1") and not course.is_staff("ana")
    assert course.summary()["helpers"] == ["helper1"]


async def test_helpers_get_a_group_and_a_role_below_instructor(svc, t):
    await svc.core.membership.sync_groups()
    assert svc.hub.groups[f"helpers-{COURSE}"] == {"helper1"}
    course = svc.core.catalog.get(COURSE)
    assert await svc.core.membership.role(course, "helper1", False) == "helper"
    decision = await svc.core.membership.access(course, "helper1", False)
    assert decision.allowed and decision.role == "helper"
    # no grading rights: the instructors' group and the formgrader are not theirs
    assert "helper1" not in svc.hub.groups[f"formgrade-{COURSE}"]
    r = await svc.api("GET", f"courses/{COURSE}/grades", t["helper1"])
    assert r.code == 403, r.body
    r = await svc.api("POST", f"courses/{COURSE}/roster", t["helper1"], body={"users": ["x1"]})
    assert r.code == 403, r.body


async def test_the_whole_help_flow_with_consent_and_audit(svc, t):
    for who in ("ana", "ben"):
        assert (await svc.api("POST", f"courses/{COURSE}/enrol", t[who])).code == 201
    r = await svc.api("POST", "me/hands", t["ana"], body={"course": COURSE, "question": "My  loss is NaN"})
    assert r.code == 201, r.body
    hand = r.json()
    assert hand["state"] == "raised" and hand["question"] == "My loss is NaN"
    await asyncio.sleep(0.05)
    r = await svc.api("POST", "me/hands", t["ben"], body={"course": COURSE, "question": "kernel died"})
    assert r.code == 201

    # the queue: oldest first, with question and waiting time; helpers and instructors only
    for who in ("helper1", "instructor", "admin"):
        q = await svc.api("GET", f"courses/{COURSE}/hands", t[who])
        assert q.code == 200, q.body
        assert [h["user"] for h in q.json()["hands"]] == ["ana", "ben"]
        assert q.json()["hands"][0]["waiting_s"] >= 0 and q.json()["hands"][0]["question"] == "My loss is NaN"
    for who in ("helper2", "ana", "stranger"):  # another course's helper sees nothing
        q = await svc.api("GET", f"courses/{COURSE}/hands", t[who])
        assert q.code == 403 and "helpers" in q.json()["message"], q.body
        r = await svc.api("POST", f"courses/{COURSE}/hands/{hand['id']}/take", t[who])
        assert r.code == 403

    # take: the learner sees who is coming
    r = await svc.api("POST", f"courses/{COURSE}/hands/{hand['id']}/take", t["helper1"])
    assert r.code == 200 and r.json()["state"] == "taken" and r.json()["helper"] == "helper1"
    mine = (await svc.api("GET", "me", t["ana"])).json()["hands"][COURSE]
    assert mine["helper"] == "helper1" and mine["state"] == "taken"
    r = await svc.api("POST", f"courses/{COURSE}/hands/{hand['id']}/take", t["instructor"])
    assert r.code == 409 and "helper1" in r.json()["message"]

    # no access without the accept: accepting before any ask is refused, nothing is shared
    r = await svc.api("POST", f"me/hands/{COURSE}/accept", t["ana"])
    assert r.code == 409 and r.json()["reason"] == "not-asked"
    r = await svc.api("POST", f"courses/{COURSE}/hands/{hand['id']}/ask", t["helper1"])
    assert r.code == 200 and r.json()["state"] == "asked"
    assert svc.hub.shares == set()
    r = await svc.api("POST", f"me/hands/{COURSE}/accept", t["ana"])
    assert r.code == 404 and r.json()["reason"] == "not-running"  # no sandbox to look into yet
    admit = await svc.internal("POST", "admit", {"user": "ana", "server_name": "", "course": COURSE})
    assert admit.code == 201, admit.body
    r = await svc.api("POST", f"me/hands/{COURSE}/accept", t["ana"])
    assert r.code == 200 and r.json()["state"] == "shared" and r.json()["share_left_s"] > 0
    assert svc.hub.shares == {("ana", "", "helper1")}
    # the helper opens the learner's sandbox: the hub issues them a token for it, and the log says so, once
    room = svc.app_config.classroom(svc.core)
    await room.watch_use()
    svc.hub.server_logins[("helper1", "ana", "")] = [{"id": "a1", "created": "2026-12-08T10:00:00Z"}]
    await room.watch_use()
    await room.watch_use()

    # the learner ends it: share revoked, the helper's tokens for that server deleted
    r = await svc.api("POST", f"me/hands/{COURSE}/end", t["ana"])
    assert r.code == 200 and r.json()["state"] == "taken"
    assert svc.hub.shares == set() and svc.hub.revoked_tokens[-1] == ("helper1", "ana", "")
    assert svc.hub.server_logins == {}
    r = await svc.api("POST", f"me/hands/{COURSE}/end", t["ana"])
    assert r.code == 409 and r.json()["reason"] == "not-shared"

    # ask again, accept, then lowering the hand ends the share too
    await svc.api("POST", f"courses/{COURSE}/hands/{hand['id']}/ask", t["helper1"])
    assert (await svc.api("POST", f"me/hands/{COURSE}/accept", t["ana"])).code == 200
    assert svc.hub.shares == {("ana", "", "helper1")}
    r = await svc.api("DELETE", f"me/hands/{COURSE}", t["ana"])
    assert r.code == 200 and r.json()["state"] == "closed"
    assert svc.hub.shares == set()
    assert [h["user"] for h in (await svc.api("GET", f"courses/{COURSE}/hands", t["helper1"])).json()["hands"]] == [
        "ben"
    ]

    # the audit log: every step, for the learner (their own), the instructor and admins
    steps = [e["action"] for e in reversed((await svc.api("GET", f"courses/{COURSE}/audit", t["ana"])).json()["audit"])]
    assert steps == [
        "raised",
        "taken",
        "asked",
        "accepted",
        "granted",
        "used",
        "ended",
        "revoked",
        "asked",
        "accepted",
        "granted",
        "ended",
        "lowered",
        "revoked",
    ], steps
    full = (await svc.api("GET", f"courses/{COURSE}/audit", t["instructor"])).json()["audit"]
    assert {e["learner"] for e in full} == {"ana", "ben"}
    assert (await svc.api("GET", f"courses/{COURSE}/audit", t["admin"])).code == 200
    ben = (await svc.api("GET", f"courses/{COURSE}/audit", t["ben"])).json()["audit"]
    assert {e["learner"] for e in ben} == {"ben"}
    assert (await svc.api("GET", f"courses/{COURSE}/audit", t["stranger"])).code == 403
    await svc.internal("POST", "release", {"user": "ana", "server_name": "", "reason": "stopped"})


async def test_the_time_limit_ends_the_share(svc, t):
    room = svc.app_config.classroom(svc.core)
    await svc.api("POST", "me/hands", t["ben"], body={"course": COURSE})
    hand = (await svc.api("GET", "me/hands", t["ben"])).json()["hands"][COURSE]
    await svc.api("POST", f"courses/{COURSE}/hands/{hand['id']}/ask", t["helper1"])
    await svc.internal("POST", "admit", {"user": "ben", "server_name": "", "course": COURSE})
    room.share_limit_s = 1
    try:
        assert (await svc.api("POST", f"me/hands/{COURSE}/accept", t["ben"])).code == 200
    finally:
        room.share_limit_s = 1800
    assert ("ben", "", "helper1") in svc.hub.shares
    await asyncio.sleep(1.1)
    await room.expire()
    assert ("ben", "", "helper1") not in svc.hub.shares
    audit = (await svc.api("GET", f"courses/{COURSE}/audit", t["ben"])).json()["audit"]
    assert audit[0]["action"] == "revoked" and audit[1]["actor"] == "aifhub" and "time limit" in audit[1]["detail"]
    await svc.api("DELETE", f"me/hands/{COURSE}", t["ben"])
    await svc.internal("POST", "release", {"user": "ben", "server_name": "", "reason": "stopped"})


async def test_the_queue_streams_live(svc, t):
    got, seen = [], asyncio.Event()

    def on_chunk(chunk):
        got.append(chunk.decode())
        if "streamed?" in got[-1]:
            seen.set()

    from tornado.httpclient import HTTPRequest

    req = HTTPRequest(
        svc.url + f"api/v1/courses/{COURSE}/hands",
        headers={"Authorization": f"token {t['helper1']}", "Accept": "text/event-stream"},
        streaming_callback=on_chunk,
        request_timeout=5,
    )
    fetch = asyncio.ensure_future(svc.http.fetch(req, raise_error=False))
    await asyncio.sleep(0.3)
    assert got and got[0].startswith("event: hands")
    await svc.api("POST", "me/hands", t["ana"], body={"course": COURSE, "question": "streamed?"})
    await asyncio.wait_for(seen.wait(), 2)  # pushed to the open stream, not polled
    assert any("streamed?" in c for c in got), got
    await svc.api("DELETE", f"me/hands/{COURSE}", t["ana"])
    fetch.cancel()
    r = await svc.fetch(
        "GET", f"api/v1/courses/{COURSE}/hands/stream", token=t["helper2"], headers={"Accept": "text/event-stream"}
    )
    assert r.code == 403


@pytest.mark.parametrize(
    "who, method, path, body, status, words",
    [
        ("ana", "POST", "me/hands", {"question": "no course"}, 400, "course"),
        ("ana", "POST", "me/hands", {"course": "no-such", "question": "x"}, 404, "no course"),
        ("ana", "POST", "me/hands", {"course": COURSE, "question": 3}, 400, "string"),
        ("ana", "POST", "me/hands", {"course": COURSE, "question": "x" * 600}, 400, "500"),
        ("stranger", "POST", "me/hands", {"course": OTHER, "question": "x"}, 403, "not a learner"),
        ("helper1", "POST", "me/hands", {"course": COURSE, "question": "x"}, 403, "not a learner"),
        ("ana", "DELETE", f"me/hands/{OTHER}", None, 404, "no raised hand"),
        ("ana", "POST", f"me/hands/{COURSE}/accept", None, 404, "no raised hand"),
        ("helper1", "POST", f"courses/{COURSE}/hands/999999/take", None, 404, "no raised hand"),
        ("helper1", "POST", f"courses/{OTHER}/hands/1/ask", None, 403, "helpers"),
        ("helper1", "POST", f"courses/{COURSE}/announcements", {"text": "hi"}, 403, "instructors"),
        ("instructor", "POST", f"courses/{COURSE}/announcements", {"text": "  "}, 400, "text"),
        ("instructor", "POST", f"courses/{COURSE}/announcements", {"text": "x", "session": 9}, 400, "session"),
        ("instructor", "POST", f"courses/{COURSE}/announcements", {"text": "x", "session": "0"}, 400, "session"),
        ("instructor", "POST", "courses/no-such/announcements", {"text": "x"}, 404, "no course"),
        ("stranger", "GET", f"courses/{OTHER}/announcements", None, 403, "not in"),
        ("stranger", "GET", f"courses/{COURSE}/audit", None, 403, "not in"),
    ],
)
async def test_refusals_say_why(svc, t, who, method, path, body, status, words):
    r = await svc.api(method, path, t[who], body=body)
    assert r.code == status, r.body
    assert words in r.json()["message"].lower(), r.json()


async def test_the_api_wants_a_token(svc):
    for method, path in (("POST", "me/hands"), ("GET", f"courses/{COURSE}/hands"), ("GET", f"courses/{COURSE}/audit")):
        assert (await svc.api(method, path)).code == 403


async def test_announcements_reach_the_course_and_the_running_session(svc, t):
    r = await svc.api("POST", f"courses/{COURSE}/announcements", t["instructor"], body={"text": "Break until 11:00"})
    assert r.code == 201 and r.json()["session"] is None
    r = await svc.api(
        "POST", f"courses/{COURSE}/announcements", t["instructor"], body={"text": "Now: exercise 2", "session": 0}
    )
    assert r.code == 201
    r = await svc.api(
        "POST", f"courses/{COURSE}/announcements", t["instructor"], body={"text": "Tomorrow only", "session": 1}
    )
    assert r.code == 201
    me = (await svc.api("GET", "me", t["ana"])).json()
    texts = [a["text"] for a in me["announcements"][COURSE]]
    assert texts == ["Now: exercise 2", "Break until 11:00"]  # newest first; the later session's waits
    listed = (await svc.api("GET", f"courses/{COURSE}/announcements", t["ben"])).json()["announcements"]
    assert [a["text"] for a in listed] == texts
    assert me["announcements"].get(OTHER, []) == []


async def test_an_instructor_pushes_a_file_without_overwriting_or_following_links(svc, t, tmp_path):
    work = svc.state / "work"
    (work / "ana" / COURSE).mkdir(parents=True, exist_ok=True)
    (work / "ana" / COURSE / "solution.ipynb").write_text("ana's own work")
    (work / "ben" / COURSE).mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("root's file")
    (work / "ben" / COURSE / "solution.ipynb").symlink_to(victim)  # a learner's planted link
    (work / "ben" / COURSE / "solution.from-instructor.ipynb").symlink_to(victim)
    (work / "stranger-folder").mkdir(exist_ok=True)
    r = await svc.api(
        "POST", f"courses/{COURSE}/materials/push", t["instructor"], body={"name": "solution.ipynb", "content": "SOL"}
    )
    assert r.code == 201, r.body
    result = r.json()["learners"]
    assert result["ana"] == "beside:solution.from-instructor.ipynb"
    assert (work / "ana" / COURSE / "solution.ipynb").read_text() == "ana's own work"
    assert (work / "ana" / COURSE / "solution.from-instructor.ipynb").read_text() == "SOL"
    assert result["ben"] == "beside:solution.from-instructor.ipynb"
    assert victim.read_text() == "root's file"  # neither link followed
    assert (work / "ben" / COURSE / "solution.ipynb").is_symlink()
    assert not (work / "ben" / COURSE / "solution.from-instructor.ipynb").is_symlink()
    # the same push again changes nothing for those who have it
    r = await svc.api(
        "POST", f"courses/{COURSE}/materials/push", t["instructor"], body={"name": "notes.txt", "content": "N"}
    )
    assert r.json()["learners"]["ana"] == "added"
    r = await svc.api(
        "POST", f"courses/{COURSE}/materials/push", t["instructor"], body={"name": "notes.txt", "content": "N"}
    )
    assert r.json()["learners"]["ana"] == "same"
    # from the course folder: an instructor's source file (a solution learners never got)
    r = await svc.api(
        "POST", f"courses/{COURSE}/materials/push", t["instructor"], body={"from": "02-mlp-from-scratch.ipynb"}
    )
    assert r.code == 201 and r.json()["name"] == "02-mlp-from-scratch.ipynb", r.body
    for who, body, status in (
        ("helper1", {"name": "x.txt", "content": "x"}, 403),
        ("ana", {"name": "x.txt", "content": "x"}, 403),
        ("instructor", {"name": "../x.txt", "content": "x"}, 400),
        ("instructor", {"name": ".bashrc", "content": "x"}, 400),
        ("instructor", {"name": "x.txt"}, 400),
        ("instructor", {"from": "../../etc/passwd"}, 400),
        ("instructor", {"from": "no-such.ipynb"}, 404),
    ):
        r = await svc.api("POST", f"courses/{COURSE}/materials/push", t[who], body=body)
        assert r.code == status, (who, body, r.body)
        assert r.json()["message"]


async def test_a_learner_resets_a_notebook_and_keeps_a_backup(svc, t):
    work = svc.state / "work" / "ana" / COURSE
    (work / "01-digits-logistic.ipynb").write_text("ana's broken notebook")
    r = await svc.api("POST", f"me/materials/{COURSE}/reset", t["ana"], body={"path": "01-digits-logistic.ipynb"})
    assert r.code == 200, r.body
    backup = r.json()["backup"]
    assert backup.startswith("01-digits-logistic.backup-") and backup.endswith(".ipynb")
    assert (work / backup).read_text() == "ana's broken notebook"
    assert (work / "01-digits-logistic.ipynb").read_bytes() == (
        REPO / "courses" / COURSE / "01-digits-logistic.ipynb"
    ).read_bytes()
    for who, path, status in (
        ("ana", "course.yaml", 400),
        ("ana", "source/ps1-digits/ps1-digits.ipynb", 400),
        ("ana", "../gpu-fundamentals/x", 400),
        ("ana", "nothing.ipynb", 404),
        ("stranger", "01-digits-logistic.ipynb", 409),  # enrolled in an open course, but no work folder yet
    ):
        r = await svc.api("POST", f"me/materials/{COURSE}/reset", t[who], body={"path": path})
        assert r.code == status, (who, path, r.body)
    r = await svc.api("POST", f"me/materials/{OTHER}/reset", t["ana"], body={"path": "01-digits-logistic.ipynb"})
    assert r.code == 409  # open course: ana may start it, has no folder of it


def flash_of(r):
    """Which message (ok or error) a page action left in the service's signed flash cookie, or None."""
    for header in r.headers.get_list("Set-Cookie"):
        name, _, value = header.split(";")[0].partition("=")
        if name == "aifhub-flash":
            field = value.strip('"').split("|")[4]  # tornado's signed value v2: 2|key|time|name|value|sig
            return next(iter(json.loads(base64.b64decode(field.split(":", 1)[1]))))
    return None


async def test_the_help_page_for_learners_helpers_and_outsiders(svc, t):
    await svc.api("POST", f"courses/{COURSE}/enrol", t["ana"])
    r = await svc.fetch("POST", f"courses/{COURSE}/help/raise", t["ana"], raw=b"question=page+question")
    assert r.code == 302 and flash_of(r) == "ok", r.headers
    page = (await svc.fetch("GET", f"courses/{COURSE}/help", t["ana"])).body.decode()
    assert "Lower hand" in page and "page question" in page and 'id="queue"' not in page
    page = (await svc.fetch("GET", f"courses/{COURSE}/help", t["helper1"])).body.decode()
    assert 'id="queue"' in page and "Take ana" in page and "page question" in page
    assert "Post</button>" not in page and "Hand out a file" not in page  # helpers neither announce nor push
    hand = (await svc.api("GET", "me/hands", t["ana"])).json()["hands"][COURSE]
    r = await svc.fetch("POST", f"courses/{COURSE}/help/hands/{hand['id']}/ask", t["helper1"], raw=b"")
    assert r.code == 302 and flash_of(r) != "error"
    page = (await svc.fetch("GET", f"courses/{COURSE}/help", t["ana"])).body.decode()
    assert "Accept: let helper1 in" in page and "Decline" in page
    r = await svc.fetch("POST", f"courses/{COURSE}/help/end", t["ana"], raw=b"")  # decline
    assert r.code == 302 and flash_of(r) != "error"
    r = await svc.fetch("POST", f"courses/{COURSE}/help/accept", t["ana"], raw=b"")
    assert r.code == 302 and flash_of(r) == "error"  # nothing to accept after declining
    page = (await svc.fetch("GET", f"courses/{COURSE}/help", t["instructor"])).body.decode()
    assert "Announce to the learners" in page and "Hand out a file" in page and "declined" in page
    r = await svc.fetch("POST", f"courses/{COURSE}/help/announce", t["instructor"], raw=b"text=From+the+page")
    assert r.code == 302 and flash_of(r) != "error"
    assert "From the page" in (await svc.fetch("GET", f"courses/{COURSE}/help", t["ben"])).body.decode()
    assert (await svc.fetch("GET", f"courses/{OTHER}/help", t["helper1"])).code == 404  # not a course of theirs
    r = await svc.fetch("POST", f"courses/{COURSE}/help/hands/{hand['id']}/take", t["helper2"], raw=b"")
    assert flash_of(r) == "error"
    await svc.api("DELETE", f"me/hands/{COURSE}", t["ana"])


async def test_attendance_per_session_counts_overlap_once():
    from aifhub.classroom.attendance import attended, table, to_csv

    t0 = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    windows = [(t0, t0 + timedelta(hours=2)), (t0 + timedelta(days=1), t0 + timedelta(days=1, hours=2))]
    spans = {
        "ana": [
            (t0 - timedelta(minutes=30), t0 + timedelta(minutes=30)),
            (t0 + timedelta(minutes=20), t0 + timedelta(hours=1)),
        ],
        "ben": [(t0 + timedelta(hours=2), t0 + timedelta(hours=3))],  # starts as the session ends: not present
        "cem": [(t0 + timedelta(days=1, hours=1), None)],  # still running
    }
    rows = table(windows, spans, now=t0 + timedelta(days=1, hours=1, minutes=15))
    assert rows[0]["learners"] == {"ana": 3600}  # 9:00-10:00, the overlapping spans counted once
    assert rows[1]["learners"] == {"cem": 900}
    assert attended(windows, spans["ana"]) == 1 and attended(windows, spans["ben"]) == 0
    text = to_csv("c1", rows)
    assert text.splitlines()[0] == "course,session,session_start,session_end,learner,minutes"
    assert text.splitlines()[1].endswith(",ana,60.0")


async def test_attendance_for_instructors_as_json_and_csv(svc, t):
    await svc.internal("POST", "admit", {"user": "ben", "server_name": "", "course": COURSE})
    await asyncio.sleep(1.1)
    await svc.internal("POST", "release", {"user": "ben", "server_name": "", "reason": "stopped"})
    r = await svc.api("GET", f"courses/{COURSE}/attendance", t["instructor"])
    assert r.code == 200, r.body
    sessions = r.json()["sessions"]
    assert len(sessions) == 2 and sessions[0]["learners"].get("ben", 0) >= 1 and sessions[1]["learners"] == {}
    r = await svc.api("GET", f"courses/{COURSE}/attendance", t["instructor"], query={"format": "csv"})
    assert r.code == 200 and r.headers["Content-Type"].startswith("text/csv") and b",ben," in r.body
    for who in ("helper1", "ben", "stranger"):
        assert (await svc.api("GET", f"courses/{COURSE}/attendance", t[who])).code == 403
    page = (await svc.fetch("GET", f"courses/{COURSE}/help", t["instructor"])).body.decode()
    assert 'id="attendance"' in page and "ben (" in page
    page = (await svc.fetch("GET", f"courses/{COURSE}", t["instructor"])).body.decode()
    assert 'id="course-attendance"' in page and "ben (" in page and "course-ann-h" in page
    page = (await svc.fetch("GET", f"courses/{COURSE}", t["ben"])).body.decode()
    assert "course-ann-h" in page and "Break until 11:00" in page and "course-attendance" not in page


@pytest.mark.parametrize(
    "client, owner, server, matches",
    [
        ("Server at /user/ana/", "ana", "", True),
        ("Server at /hub-base/user/ana/", "ana", "", True),
        ("Server at /user/ana/gpu/", "ana", "gpu", True),
        ("Server at /user/ana/gpu/", "ana", "", False),  # another server of hers
        ("Server at /user/anna/", "ana", "", False),
        ("Server at /user/ana@uni.eu/", "ana@uni.eu", "", True),
        ("jupyterhub-user-ana%40uni.eu", "ana@uni.eu", "", True),
        ("jupyterhub-user-ana-gpu", "ana", "gpu", True),
        ("jupyterhub-user-ana", "ana", "gpu", False),
        ("aifhub", "ana", "", False),
    ],
)
async def test_tokens_of_a_server_are_told_by_their_oauth_client(client, owner, server, matches):
    from aifhub.service.hubapi import server_oauth_client_matches

    assert server_oauth_client_matches(client, owner, server) is matches
