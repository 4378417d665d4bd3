"""The service's pages through HTTP as a browser sends it (cookies, forms, XSRF): learner, instructor, admin."""

import re

import pytest
import requests
from conftest import start_hub
from hubrunner import PASSWORD

FLASH = re.compile(r'class="flash-(ok|error)"[^>]*>([^<]+)')


CODE_COURSE = """id: code-course
title: Code Course
kind: course
enrollment: code
enrollment_code: OPEN-SESAME
instructors: [instructor]
sandbox: {image: cpu-base, cpu: 1}
"""


def add_code_course(courses):
    (courses / "code-course").mkdir()
    (courses / "code-course" / "course.yaml").write_text(CODE_COURSE)


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="0", prepare_courses=add_code_course)
    yield hub
    hub.stop()


def login(hub, user):
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(
        f"{hub.url}/hub/login",
        data={"username": user, "password": PASSWORD, "_xsrf": s.cookies.get("_xsrf", path="/hub/")},
        timeout=30,
    )
    assert r.status_code == 200
    return s


def page(hub, s, path):
    r = s.get(f"{hub.url}/services/aifhub/{path}", timeout=30)
    return r, (re.search(r'name="_xsrf" value="([^"]+)"', r.text) or [None, None])[1]


def flash(r):
    return FLASH.findall(r.text)


def test_learner_enrols_in_the_mooc_and_sees_quota_and_start(hub):
    s = login(hub, "pagelearner")
    home, token = page(hub, s, "")
    assert home.status_code == 200 and 'id="course-dl-basics"' in home.text and ">Enrol</button>" in home.text
    assert "gpu-fundamentals" not in home.text  # a roster course the learner is not on stays hidden
    r = s.post(f"{hub.url}/services/aifhub/courses/dl-basics/enrol", data={"_xsrf": token}, timeout=30)
    assert flash(r) == [("ok", "You are enrolled in Deep Learning Basics.")]
    assert 'class="quota-bar"' in r.text and "Start sandbox" in r.text and "/hub/spawn?opt-course=dl-basics" in r.text
    assert "of 20.00 h used" in r.text  # the MOOC's CPU-hours per week
    group = hub.api("GET", "groups/nbgrader-dl-basics").json()
    assert "pagelearner" in group["users"]


def test_enrolment_with_a_code(hub):
    s = login(hub, "coder")
    home, token = page(hub, s, "")
    assert 'id="code-code-course"' in home.text and "Enrolment code" in home.text
    r = s.post(
        f"{hub.url}/services/aifhub/courses/code-course/enrol", data={"_xsrf": token, "code": "guess"}, timeout=30
    )
    assert flash(r) == [("error", "That is not the enrolment code of Code Course.")]
    assert hub.spawn("coder", "code-course").status_code == 403
    r = s.post(
        f"{hub.url}/services/aifhub/courses/code-course/enrol", data={"_xsrf": token, "code": "OPEN-SESAME"}, timeout=30
    )
    assert flash(r) == [("ok", "You are enrolled in Code Course.")] and "/hub/spawn?opt-course=code-course" in r.text
    assert hub.spawn("coder", "code-course").status_code in (201, 202)
    hub.stop_server("coder")


def test_learner_stops_a_running_sandbox_from_the_home_page(hub):
    hub.spawn("runner", "dl-basics")
    s = login(hub, "runner")
    home, token = page(hub, s, "")
    assert "Your sandbox is running" in home.text and "Stop sandbox" in home.text
    r = s.post(f"{hub.url}/services/aifhub/courses/dl-basics/stop", data={"_xsrf": token}, timeout=60)
    assert flash(r) == [("ok", "Your sandbox is stopping; your work folder is kept.")]
    for _ in range(60):
        if hub.server_model("runner") is None:
            break
        import time

        time.sleep(0.5)
    assert hub.server_model("runner") is None


def test_a_post_without_the_xsrf_token_is_refused(hub):
    s = login(hub, "admin")
    r = s.post(f"{hub.url}/services/aifhub/admin/allocations", data={"id": "CSRF-1", "gpu_hours": "10"}, timeout=30)
    assert r.status_code == 403
    assert "CSRF-1" not in hub.service("GET", "allocations").text


def test_instructor_manages_the_roster_and_sees_usage(hub):
    s = login(hub, "instructor")
    course, token = page(hub, s, "courses/gpu-fundamentals")
    assert course.status_code == 200 and 'id="roster"' in course.text and 'id="usage"' in course.text
    r = s.post(
        f"{hub.url}/services/aifhub/courses/gpu-fundamentals/roster/add",
        data={"_xsrf": token, "user": "newcomer"},
        timeout=30,
    )
    assert flash(r) == [("ok", "Added newcomer.")] and "<td>newcomer</td>" in r.text
    r = s.post(
        f"{hub.url}/services/aifhub/courses/gpu-fundamentals/roster/import",
        timeout=30,
        data={"_xsrf": token, "csv": "username,email\nimp1,a@b\nimp2,c@d\n"},
    )
    assert flash(r) == [("ok", "Imported 2 learner(s).")]
    assert set(hub.api("GET", "groups/nbgrader-gpu-fundamentals").json()["users"]) >= {
        "newcomer",
        "imp1",
        "imp2",
        "learner1",
    }
    assert hub.spawn("newcomer", "gpu-fundamentals").status_code in (201, 202)  # now on the roster
    hub.stop_server("newcomer")
    r = s.post(
        f"{hub.url}/services/aifhub/courses/gpu-fundamentals/roster/remove",
        data={"_xsrf": token, "user": "learner1"},
        timeout=30,
    )
    assert flash(r)[0][0] == "error" and "course file" in flash(r)[0][1]
    r = s.post(
        f"{hub.url}/services/aifhub/courses/gpu-fundamentals/roster/remove",
        data={"_xsrf": token, "user": "imp2"},
        timeout=30,
    )
    assert flash(r) == [("ok", "Removed.")] and "<td>imp2</td>" not in r.text
    usage, _ = page(hub, s, "courses/gpu-fundamentals")
    assert "<td>newcomer</td><td>1</td>" in usage.text


def test_roster_api_is_for_the_course_instructors(hub):
    teacher = hub.token_for("instructor")
    r = hub.service("POST", "courses/dl-basics/roster", token=teacher, json={"users": ["api-added"]})
    assert r.status_code == 201 and r.json()["added"] == ["api-added"]
    assert hub.service("POST", "courses/dl-basics/roster", token=teacher, json={"users": "x"}).status_code == 400
    learner = hub.token_for("learner1")
    for method in ("GET", "POST"):
        r = hub.service(method, "courses/gpu-fundamentals/roster", token=learner, json={"users": ["x"]})
        assert r.status_code == 403 and "Only the instructors" in r.json()["message"]


def test_admin_creates_tops_up_and_closes_an_allocation(hub):
    s = login(hub, "admin")
    admin, token = page(hub, s, "admin")
    assert 'id="alloc-EHPC-AIF-2026-PG01"' in admin.text and 'class="burndown"' in admin.text
    r = s.post(
        f"{hub.url}/services/aifhub/admin/allocations",
        timeout=30,
        data={"_xsrf": token, "id": "PAGE-1", "gpu_hours": "12", "end": "2027-01-31", "title": "From the page"},
    )
    assert (
        flash(r) == [("ok", "Created PAGE-1.")] and 'id="alloc-PAGE-1"' in r.text and 'id="burndown-PAGE-1"' in r.text
    )
    r = s.post(
        f"{hub.url}/services/aifhub/admin/allocations/PAGE-1/topup", data={"_xsrf": token, "gpu_hours": "3"}, timeout=30
    )
    assert flash(r) == [("ok", "Topped up PAGE-1.")]
    assert hub.service("GET", "allocations/PAGE-1").json()["granted_gpu_hours"] == 15
    r = s.post(
        f"{hub.url}/services/aifhub/admin/allocations",
        data={"_xsrf": token, "id": "PAGE-2", "gpu_hours": "-1"},
        timeout=30,
    )
    assert flash(r)[0][0] == "error" and "more than 0" in flash(r)[0][1]
    r = s.post(f"{hub.url}/services/aifhub/admin/allocations/PAGE-1/close", data={"_xsrf": token}, timeout=30)
    assert flash(r) == [("ok", "Closed PAGE-1.")]
    assert hub.service("GET", "allocations/PAGE-1").json()["status"] == "closed"


@pytest.mark.parametrize(
    "user, path",
    [
        ("learner1", "admin"),
        ("learner1", "courses/gpu-fundamentals/instructor"),
        ("instructor-of-nothing", "courses/dl-basics/instructor"),
    ],
)
def test_pages_refuse_those_they_are_not_for(hub, user, path):
    r, _ = page(hub, login(hub, user), path)
    assert r.status_code == 403 and "403" in r.text


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "allocations"),
        ("POST", "allocations"),
        ("GET", "allocations/EHPC-AIF-2026-PG01"),
        ("GET", "usage?user=learner2"),
        ("GET", "usage?course=gpu-fundamentals&user=learner2"),
    ],
)
def test_api_refuses_learners_server_side(hub, method, path):
    r = hub.service(method, path, token=hub.token_for("learner1"), json={"id": "X", "gpu_hours": 1})
    assert r.status_code == 403, r.text


def test_learners_see_only_their_own_usage(hub):
    hub.spawn("counted", "dl-basics")
    hub.stop_server("counted")
    mine = hub.service("GET", "usage", token=hub.token_for("counted")).json()["sessions"]
    assert mine and {r["user"] for r in mine} == {"counted"}
    in_course = hub.service("GET", "usage?course=dl-basics", token=hub.token_for("counted")).json()["sessions"]
    assert {r["user"] for r in in_course} == {"counted"}  # a learner filtering by course still sees only their own
    teacher = hub.service("GET", "usage?course=dl-basics", token=hub.token_for("instructor")).json()["sessions"]
    assert "counted" in {r["user"] for r in teacher}


def test_instructor_grades_through_the_course_page_and_the_learner_sees_grade_and_feedback(hub):
    import time

    from gradingkit import ASSIGNMENT, COURSE, blank_notebook, solution_notebook, submit

    teacher = login(hub, "instructor")
    course, token = page(hub, teacher, f"courses/{COURSE}")
    assert 'id="assignments"' in course.text and f'id="assignment-{ASSIGNMENT}"' in course.text

    def act(action):
        return teacher.post(
            f"{hub.url}/services/aifhub/courses/{COURSE}/assignments/{ASSIGNMENT}/{action}",
            data={"_xsrf": token},
            timeout=120,
        )

    assert flash(act("release")) == [("ok", f"Released {ASSIGNMENT}: learners can fetch it now.")]
    for user, nb in (("gradee", solution_notebook()), ("zero", blank_notebook())):
        hub.ensure_user(user)
        hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for(user))
        assert submit(hub, user, nb).status_code == 201
    assert flash(act("collect")) == [("ok", f"Collected {ASSIGNMENT}: 2 submission(s).")]
    assert flash(act("autograde")) == [("ok", f"Queued 2 submission(s) of {ASSIGNMENT} for grading.")]
    deadline = time.monotonic() + 120
    while True:
        view, _ = page(hub, teacher, f"courses/{COURSE}")
        if "2 done, 0 failed, 0 running, 0 queued" in view.text:
            break
        assert time.monotonic() < deadline, "grading did not finish"
        time.sleep(1)
    assert 'class="grading-progress" value="2" max="2"' in view.text and 'id="grade-distribution"' in view.text
    assert "2 graded submissions" in view.text
    assert flash(act("feedback")) == [("ok", f"Released feedback on {ASSIGNMENT} to 2 learner(s).")]

    learner = login(hub, "gradee")
    mine, _ = page(hub, learner, f"courses/{COURSE}")
    assert "<td>10 / 10</td>" in mine.text
    # when it was handed in, to the minute as every moment on the pages (nbgrader keeps microseconds)
    assert re.search(r"1× \(last \d{4}-\d\d-\d\d \d\d:\d\d UTC\)", mine.text), mine.text
    assert not re.search(r"\d:\d\d:\d\d\.\d", mine.text), mine.text
    link = f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback/{ASSIGNMENT}"
    fb, _ = page(hub, learner, link)
    assert fb.status_code == 200 and "sandbox" in fb.headers["Content-Security-Policy"] and ASSIGNMENT in fb.text
    other, _ = page(hub, login(hub, "outsider2"), link)
    assert other.status_code == 404  # one's feedback is nobody else's
    home, _ = page(hub, learner, "")
    assert f"{ASSIGNMENT}: graded 10 / 10" in home.text
    zero, _ = page(hub, login(hub, "zero"), f"courses/{COURSE}")
    assert "<td>0 / 10</td>" in zero.text

    # a login that names its person (as OIDC and LTI logins do, through the hub's report to the service):
    # the grades CSV shows the name beside the (often opaque) user name
    internal = (hub.state_dir / "secrets" / "internal_token").read_text().strip()
    told = requests.post(
        f"{hub.url}/services/aifhub/api/v1/internal/login",
        headers={"Authorization": f"token {internal}"},
        json={"user": "gradee", "source": "oidc", "grants": {"courses": {}}, "profile": {"name": "Grace Dee"}},
        timeout=30,
    )
    assert told.status_code == 200, told.text
    csv_text = teacher.get(f"{hub.url}/services/aifhub/api/v1/courses/{COURSE}/grades?format=csv", timeout=60).text
    assert "gradee" in csv_text and "zero" in csv_text
    header, *rows = csv_text.splitlines()
    assert header == "student_id,assignment_id,timestamp,score,max_score,submitted,name,email", header
    assert any(row.startswith("gradee,") and row.endswith(",Grace Dee,") for row in rows), rows
    assert any(row.startswith("zero,") and row.endswith(",,") for row in rows), rows
    learner_action = learner.post(
        f"{hub.url}/services/aifhub/courses/{COURSE}/assignments/{ASSIGNMENT}/release",
        data={"_xsrf": page(hub, learner, "")[1]},
        timeout=30,
    )
    assert learner_action.status_code == 403
