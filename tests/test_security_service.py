"""The service's grading endpoints under abuse, in process (its real app, database, nbgrader worker):
hand-ins capped and refused with a clear status (#15 item 4), any hub user name can hand in (#15 item 5)."""

import asyncio
import io
import tarfile

import pytest
from gradingkit import ASSIGNMENT, COURSE, archive, solution_notebook
from servicekit import InProcessService

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
async def svc(tmp_path_factory):
    service = await InProcessService(tmp_path_factory.mktemp("security-service")).start()
    r = await service.api(
        "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release", service.token("admin", admin=True)
    )
    assert r.code == 200, r.body
    yield service
    await service.stop()


async def learner(svc, name):
    """A token of ``name``, enrolled in the course."""
    token = svc.token(name)
    r = await svc.api("POST", f"courses/{COURSE}/enrol", token)
    assert r.code in (200, 201), r.body
    return token


def hand_in():
    return archive({f"{ASSIGNMENT}.ipynb": solution_notebook()})


async def submit(svc, token, data=None):
    return await svc.api(
        "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions", token, raw=hand_in() if data is None else data
    )


def inbound(svc):
    return svc.state / "grading" / COURSE / "exchange" / "inbound"


def many_files(n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(n):
            tar.addfile(tarfile.TarInfo(f"f/{i}"), io.BytesIO(b""))
    return buf.getvalue()


async def test_a_hand_in_of_many_tiny_files_is_a_413_and_leaves_nothing(svc):
    token = await learner(svc, "tiny")
    for n in (1001, 20_000):
        data = many_files(n)
        assert len(data) < 500_000  # far below the size limit: the count is what is refused
        r = await submit(svc, token, data)
        assert r.code == 413, (n, r.code, r.body)
        assert "more than 1000 files" in r.json()["message"] or "more than 2000 entries" in r.json()["message"]
    theirs = inbound(svc) / "tiny" / ASSIGNMENT
    assert not theirs.exists() or not any(theirs.iterdir()), "a refused hand-in left files behind"


async def test_hand_ins_per_minute_are_capped_with_a_429(svc):
    svc.grading.submissions_per_minute = 3
    try:
        token = await learner(svc, "eager")
        codes = [(await submit(svc, token)).code for _ in range(3)]
        assert codes == [201, 201, 201]
        r = await submit(svc, token)
        assert r.code == 429 and "3 times in the last minute" in r.json()["message"], r.body
        assert (await submit(svc, await learner(svc, "calm"))).code == 201  # another learner is not held up
    finally:
        svc.grading.submissions_per_minute = 10


async def test_a_burst_of_hand_ins_gets_429s_not_500s_nor_more_than_the_cap(svc):
    token = await learner(svc, "burst")
    answers = await asyncio.gather(*(submit(svc, token) for _ in range(40)))
    codes = sorted(r.code for r in answers)
    assert set(codes) == {201, 429} and codes.count(201) == svc.grading.submissions_per_minute, codes
    r = await svc.api("GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions", token)
    assert len(r.json()["submissions"]) == svc.grading.submissions_per_minute


async def test_hand_ins_beyond_what_the_course_keeps_are_a_429(svc):
    svc.grading.max_submissions = 2
    try:
        token = await learner(svc, "keeper")
        assert [(await submit(svc, token)).code for _ in range(2)] == [201, 201]
        r = await submit(svc, token)
        assert r.code == 429 and "the most this course keeps (2)" in r.json()["message"], r.body
    finally:
        svc.grading.max_submissions = 100


@pytest.mark.parametrize("user", ["alice@uni.edu", "Bob Smith", "émile", "x" * 255, "..", "-dash"])
async def test_any_hub_user_name_can_hand_in_and_see_it(svc, user):
    token = await learner(svc, user)
    r = await submit(svc, token)
    assert r.code == 201, r.body
    assert r.json()["student_id"] == user
    listed = await svc.api("GET", f"courses/{COURSE}/assignments", token)
    assert listed.code == 200 and listed.json()["student_id"] == user
    mine = next(a for a in listed.json()["assignments"] if a["assignment_id"] == ASSIGNMENT)
    assert len(mine["submissions"]) == 1
    home = await svc.fetch("GET", "", token)
    assert home.code == 200, home.body[:300]


async def test_student_ids_are_stable_distinct_and_not_for_the_taking(svc):
    from aifhub.grading import students

    ids = await svc.db.run(students.student_ids, ["alice@uni.edu", "alice_uni.edu", "alice@uni.edu"])
    assert ids["alice@uni.edu"] != "alice@uni.edu" and ids["alice_uni.edu"] == "alice_uni.edu"
    again = await svc.db.run(students.student_id, "alice@uni.edu")
    assert again == ids["alice@uni.edu"]
    # a user who names themselves after someone's id gets an id of their own, and none of their files
    squatter = ids["alice@uni.edu"]
    assert await svc.db.run(students.student_id, squatter) not in (squatter, ids["alice_uni.edu"])
    listed = await svc.api("GET", f"courses/{COURSE}/assignments", await learner(svc, squatter))
    mine = next(a for a in listed.json()["assignments"] if a["assignment_id"] == ASSIGNMENT)
    assert mine["submissions"] == [] and mine["feedback"] is None


async def test_a_user_name_longer_than_the_hub_allows_is_a_400(svc):
    token = svc.token("y" * 300)
    await svc.api("POST", f"courses/{COURSE}/enrol", token)
    r = await submit(svc, token)
    assert r.code == 400 and "at most 255" in r.json()["message"], r.body


# -- #15 item 6: odd input is a clear 4xx; nothing echoed whole; exports are not spreadsheet formulas ----

ODD_REQUESTS = [
    ("POST", "allocations", {"id": "BIG", "gpu_hours": 1e308}, "at most 10,000,000,000 GPU-hours"),
    ("POST", "allocations", {"id": "INF", "gpu_hours": "inf"}, "at most 10,000,000,000 GPU-hours"),
    ("POST", "allocations", {"id": "DICT", "gpu_hours": 1, "title": {"a": 1}}, "title must be text"),
    ("POST", "allocations", {"id": "LIST", "gpu_hours": 1, "title": ["x"]}, "title must be text"),
    ("POST", "allocations", {"id": "x" * 10_000, "gpu_hours": 1}, "is not valid"),
    ("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", {"students": "alice"}, "a list of user names"),
    ("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", {"students": [1, 2]}, "a list of user names"),
    ("GET", f"courses/{COURSE}/jobs?id=99999999999999999999999", None, "whole number"),
]


@pytest.mark.parametrize(
    "method, path, body, words", ODD_REQUESTS, ids=[f"{m} {p[:30]} {str(b)[:30]}" for m, p, b, _ in ODD_REQUESTS]
)
async def test_odd_requests_get_a_clear_400_that_does_not_echo_them_whole(svc, method, path, body, words):
    r = await svc.api(method, path, svc.token("admin", admin=True), body=body)
    assert r.code == 400, (r.code, r.body[:300])
    message = r.json()["message"]
    assert words in message and len(message) < 300, message


@pytest.mark.parametrize(
    "body, words",
    [
        ({"user": {"a": 1}, "course": COURSE}, "'user' must be a string"),
        ({"user": "x", "course": [COURSE]}, "'course' must be a string"),
    ],
)
async def test_the_hubs_admission_call_with_odd_fields_is_a_400(svc, body, words):
    r = await svc.internal("POST", "admit", body)
    assert r.code == 400 and words in r.json()["message"], r.body


async def test_a_user_name_over_255_characters_still_gets_its_home_page(svc):
    token = svc.token("z" * 300)
    await svc.api("POST", f"courses/{COURSE}/enrol", token)
    home = await svc.fetch("GET", "", token)
    assert home.code == 200, home.body[:300]


async def test_a_refused_hand_in_is_logged_as_a_refusal_not_a_crash(svc, caplog):
    caplog.set_level("INFO")
    r = await submit(svc, await learner(svc, "refused"), b"not a tar")
    assert r.code == 400
    assert "Traceback" not in caplog.text and "AttributeError" not in caplog.text, caplog.text[-2000:]
    assert "400 Submission refused" in caplog.text


async def test_usage_csv_cells_never_start_a_formula(svc):
    user = '=HYPERLINK("http://evil.example","x")'
    r = await svc.internal("POST", "admit", {"user": user, "server_name": "", "course": COURSE})
    assert r.code == 201, r.body
    svc.hub.running = {(user, "")}
    await asyncio.sleep(0.05)
    await svc.core.metering.meter()
    csv_text = (await svc.api("GET", "usage?format=csv", svc.token("admin", admin=True))).body.decode()
    import csv

    row = next(r for r in csv.DictReader(io.StringIO(csv_text)) if "HYPERLINK" in r["user"])
    assert row["user"] == "'" + user, row
    svc.hub.running = set()


async def test_grades_csv_cells_never_start_a_formula():
    from aifhub.grading.manager import GradingManager

    text = GradingManager.grades_csv(
        [
            {
                "student_id": "@SUM(A1:A9)",
                "assignment_id": "ps1",
                "timestamp": None,
                "score": -1.0,
                "max_score": 10.0,
                "submitted": True,
            }
        ]
    )
    assert "'@SUM(A1:A9)" in text and ",-1.0," in text  # numbers stay numbers
