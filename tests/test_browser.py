"""Learners, instructors and admins use aifhub in a real browser (Playwright driving Debian's Chromium)
against a real hub (``aifhub up``): enrol, start a sandbox and watch its progress, quota bars; the
instructor's roster and grading; the admin's allocations and charts; 403s and XSRF; labels on every
form control and nothing loaded from outside the hub. Screenshots go to ``tests/artifacts/``."""

import io
import json
import re
import tarfile
import time

import pytest

import browser
from browser import RequestLog, screenshot, unlabelled_controls
from conftest import start_hub
from hubrunner import PASSWORD

WHY_NOT = browser.unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"browser tests need a browser: {WHY_NOT}")

SERVICE = "/services/aifhub/"
GPU_COURSE = "gpu-fundamentals"  # roster workshop: learner1, learner2; instructor: instructor; 1 GPU
MOOC = "dl-basics"  # open MOOC, CPU only
# an open course that has ended (cannot start: disabled on the spawn form) with an instructor of its own
ENDED_COURSE = """id: old-mooc
title: An Old MOOC
description: Ran in 2020; kept for its materials.
kind: mooc
enrollment: open
instructors: [instructor2]
schedule: {start: 2020-01-01, end: 2020-01-31}
sandbox: {image: cpu-base, cpu: 1, memory: 1G, max_session: 1h}
allocation: EHPC-AIF-2026-PG01
"""
# what the spawn-pending page shows, recorded as it appears (the page reloads into JupyterLab when ready)
RECORD_PROGRESS = """
if (location.pathname.includes("/hub/spawn-pending/")) {
  document.addEventListener("DOMContentLoaded", () => {
    const log = document.getElementById("progress-log");
    if (!log) return;
    new MutationObserver(() => {
      const seen = JSON.parse(sessionStorage.getItem("aifhub-progress") || "[]");
      for (const e of log.querySelectorAll(".progress-log-event")) {
        if (!seen.includes(e.textContent)) seen.push(e.textContent);
      }
      sessionStorage.setItem("aifhub-progress", JSON.stringify(seen));
    }).observe(log, {childList: true});
  });
}
"""


# what would run if a course's title reached a page unescaped: it leaves a mark in the tab's sessionStorage
XSS = (
    "<script>sessionStorage.setItem('aifhub-xss', 'script')</script>"
    "<img src=x onerror=\"sessionStorage.setItem('aifhub-xss', 'img')\">"
)
# a CPU course whose learners run out of time in seconds (11 s of CPU-hours a day); its title and
# description carry a script (JSON strings are YAML strings)
TINY_COURSE = f"""id: tiny-quota
title: {json.dumps("Tiny Quota Taster " + XSS)}
description: {json.dumps("Runs out fast. " + XSS)}
kind: mooc
enrollment: open
instructors: [instructor2]
sandbox: {{image: cpu-base, cpu: 1, memory: 1G, max_session: 1h}}
allocation: EHPC-AIF-2026-PG01
quota:
  per_learner: {{cpu_hours: 0.003, window: day}}
"""


def add_courses(courses):
    for name, text in (("old-mooc", ENDED_COURSE), ("tiny-quota", TINY_COURSE)):
        (courses / name).mkdir()
        (courses / name / "course.yaml").write_text(text)


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(
        hub_dir, gpus="0", prepare_courses=add_courses, env={"AIFHUB_STOP_GRACE": "3", "AIFHUB_NOTICES_INTERVAL": "1"}
    )
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def seen():
    """Every URL any page of this module requested."""
    return RequestLog()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    with sync_playwright() as p:
        b = browser.launch(p)
        yield b
        b.close()


class Users:
    """One browser context per user, logged in once through the hub's login page; pages are reused."""

    def __init__(self, chromium, hub, seen):
        self.chromium, self.hub, self.seen = chromium, hub, seen
        self.pages = {}

    def context(self, **kw):
        context = self.seen.watch(self.chromium.new_context(viewport={"width": 1280, "height": 900}, **kw))
        context.set_default_timeout(30_000)
        context.add_init_script(RECORD_PROGRESS)
        return context

    def __call__(self, name):
        if name not in self.pages:
            self.pages[name] = browser.login(self.context(), self.hub.url, name, PASSWORD)
        return self.pages[name]

    def close(self):
        for page in self.pages.values():
            page.context.close()


@pytest.fixture(scope="module")
def users(chromium, hub, seen):
    users = Users(chromium, hub, seen)
    yield users
    users.close()


@pytest.fixture(autouse=True)
def screenshots_on_failure(request, users):
    """When a test fails, a screenshot of every user's page: tests/artifacts/<test>-FAILED-<user>.png."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        for name, page in users.pages.items():
            try:
                screenshot(page, f"{request.node.name}-FAILED-{name}")
            except Exception:  # noqa: BLE001 - a closed page must not hide the failure
                pass


def goto(page, hub, path, status=200):
    response = page.goto(hub.url + path)
    assert response is not None and response.status == status, (
        path,
        response and response.status,
        page.content()[:800],
    )
    return response


def wait_until(what, check, timeout=60, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting until {what}"
        time.sleep(interval)


# -- 1. a learner: enrol, start, progress, JupyterLab, quota bar, stop ----------------------------------


def test_learner_enrols_starts_the_mooc_sandbox_sees_quota_and_stops_it(hub, users):
    from playwright.sync_api import expect

    name = "ada"
    page = users(name)
    # the hub's home announces the learner home
    goto(page, hub, "/hub/home")
    page.locator(f'.announcement a[href="{SERVICE}"]').click()
    page.wait_for_url(hub.url + SERVICE)
    expect(page.locator("h1")).to_have_text("My courses")

    # enrol in the open MOOC
    card = page.locator(f"section#course-{MOOC}")
    expect(card.get_by_role("button", name="Enrol")).to_be_visible()
    screenshot(page, "learner-home-before-enrol")
    card.get_by_role("button", name="Enrol").click()
    page.wait_for_load_state()
    card = page.locator(f"section#course-{MOOC}")
    expect(card.locator("progress.quota-bar").first).to_be_visible()
    expect(card.get_by_role("button", name="Enrol")).to_have_count(0)
    start = card.get_by_role("link", name="Start sandbox")
    expect(start).to_have_attribute("href", re.compile(rf"/hub/spawn\?opt-course={MOOC}$"))
    assert MOOC in {
        c["id"] for c in hub.service("GET", "me", token=hub.token_for(name)).json()["courses"] if c["enrolled"]
    }

    # start it; the hub's progress page shows our steps, then JupyterLab opens
    t0 = time.monotonic()
    start.click()
    page.wait_for_url(re.compile(r"/hub/(spawn-pending/|spawn)|/user/"))
    if page.locator('input[name="course"]').count():  # the spawn form, when the hub shows it first
        page.locator(f'input[name="course"][value="{MOOC}"]').check()
        page.locator("form [type=submit]").first.click()
    if "/spawn-pending/" in page.url:
        expect(page.locator("#progress-log")).to_contain_text("Sandbox starting", timeout=60_000)
        page.evaluate("() => { const d = document.getElementById('progress-details'); if (d) d.open = true; }")
        screenshot(page, "spawn-progress")
    page.wait_for_url(re.compile(rf"/user/{name}/lab"), timeout=120_000)
    expect(page.locator(".jp-LabShell")).to_be_visible(timeout=90_000)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=90_000)
    # the course's notebooks are in the learner's work folder
    expect(page.locator(".jp-DirListing-item", has_text="01-digits-logistic.ipynb")).to_be_visible(timeout=60_000)
    started_s = time.monotonic() - t0
    screenshot(page, "jupyterlab")
    # a learner's JupyterLab has the Assignments tools, not nbgrader's instructor tools
    config = page.evaluate("() => JSON.parse(document.getElementById('jupyter-config-data').textContent)")
    disabled = config.get("disabledExtensions") or []
    for plugin in ("formgrader", "create-assignment", "course-list"):
        assert f"@jupyter/nbgrader:{plugin}" in disabled, disabled
    page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
    nbgrader_menu = page.locator("#jp-mainmenu-nbgrader")
    expect(nbgrader_menu).to_contain_text("Assignment List")
    assert "Formgrader" not in nbgrader_menu.inner_text() and "Course List" not in nbgrader_menu.inner_text()
    page.keyboard.press("Escape")
    expect(page.locator(".jp-LabShell")).not_to_contain_text("Create Assignment")
    token = {"Authorization": f"token {hub.token_for(name)}"}
    assert page.request.get(f"{hub.url}/user/{name}/formgrader", headers=token).status == 404
    assert page.request.get(f"{hub.url}/user/{name}/assignments?course_id={MOOC}", headers=token).ok
    progress = json.loads(page.evaluate("() => sessionStorage.getItem('aifhub-progress') || '[]'"))
    for step in ("Course checked", "CPU-only sandbox", "Sandbox starting", "JupyterLab"):
        assert any(m.startswith(step) for m in progress), (step, progress)
    print(f"sandbox start to JupyterLab in the browser: {started_s:.1f} s")

    # back home: running, with its quota bar, and a Stop button
    goto(page, hub, SERVICE)
    card = page.locator(f"section#course-{MOOC}")
    bars = card.locator("progress.quota-bar")
    expect(bars.first).to_be_visible()
    limits = {}
    for bar in bars.all():
        used, limit = float(bar.get_attribute("value")), float(bar.get_attribute("max"))
        assert 0 <= used <= limit, (used, limit)
        assert (bar.get_attribute("aria-label") or "").strip(), bar.evaluate("b => b.outerHTML")
        limits[limit] = used
    assert 20 in limits, limits  # dl-basics: the learner's 20 CPU-hours a week (besides the allocation's bar)
    text = card.inner_text()
    assert re.search(r"\b20(\.0+)?\b", text) and re.search(r"reset", text, re.I), text
    stop = card.get_by_role("button", name="Stop sandbox")
    expect(stop).to_be_visible()
    screenshot(page, "learner-home-running")

    stop.click()
    page.wait_for_load_state()
    wait_until(f"{name}'s sandbox stopped", lambda: hub.server_model(name) is None)
    goto(page, hub, SERVICE)
    expect(page.locator(f"section#course-{MOOC}").get_by_role("link", name="Start sandbox")).to_be_visible()


def test_learner_near_and_over_quota_sees_a_banner(hub, users):
    from playwright.sync_api import expect

    name, course = "grace", "tiny-quota"
    page = users(name)
    assert hub.spawn(name, course).status_code in (201, 202)
    banner = page.locator("div.aifhub-banner[role=alert]")

    def warned():
        goto(page, hub, SERVICE)
        return banner.count()

    wait_until("the learner home warns that the quota is nearly used", warned, timeout=60, interval=1)
    expect(banner.first).to_contain_text(re.compile(r"Tiny Quota Taster|tiny-quota"))
    screenshot(page, "learner-home-quota-banner")

    # the hub's own pages carry the same warning (the announcement, HTML): the title in it is text
    def announced():
        goto(page, hub, "/hub/home")
        return "Tiny Quota Taster" in page.locator(".announcement").inner_text()

    wait_until("the hub's home page warns too", announced, timeout=30, interval=0.5)
    assert_no_script_ran(page, "/hub/home with the quota warning")
    expect(page.locator(".announcement")).to_contain_text("Tiny Quota Taster <script>")  # as text

    # out of time: stopped after the grace period; the home page says so and tells why it cannot start
    wait_until(f"{name}'s sandbox stopped at the quota", lambda: hub.server_model(name) is None, timeout=60)
    goto(page, hub, SERVICE)
    expect(banner.first).to_contain_text(re.compile(r"Tiny Quota Taster|tiny-quota"))
    card = page.locator(f"section#course-{course}")
    expect(card.locator("p.why-not")).to_contain_text(re.compile(r"\S"))
    expect(card.get_by_role("link", name="Start sandbox")).to_have_count(0)
    screenshot(page, "learner-home-over-quota")


def assert_no_script_ran(page, where):
    page.wait_for_load_state("load")
    page.wait_for_timeout(200)  # an <img onerror> fires once the image has failed to load
    ran = page.evaluate("sessionStorage.getItem('aifhub-xss')")
    assert ran is None, f"a course title's {ran} ran on {where}"


def test_a_script_in_a_course_title_never_runs_on_any_page(hub, users):
    """#15 item 2: the course title and description reach the hub's pages (spawn form, progress, the
    announcement) and the service's (home, course, instructor, admin) as text, never as markup."""
    from playwright.sync_api import expect

    name = "mallory"
    page = users(name)
    goto(page, hub, "/hub/spawn")
    card = page.locator("label.aifhub-card", has=page.locator('input[value="tiny-quota"]'))
    expect(card).to_contain_text("Tiny Quota Taster <script>")
    assert_no_script_ran(page, "the spawn form")
    card.locator("input").check()
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(f"/user/{name}/"), timeout=120_000)  # through the progress page
    recorded = page.evaluate("sessionStorage.getItem('aifhub-progress') || '[]'")
    assert "Tiny Quota Taster <script>" in recorded, recorded
    assert_no_script_ran(page, "the spawn progress page")
    pages = [
        (name, "/hub/home"),
        (name, "/hub/token"),
        (name, SERVICE),
        (name, f"{SERVICE}courses/tiny-quota"),
        ("instructor2", f"{SERVICE}courses/tiny-quota"),
        ("instructor2", f"{SERVICE}courses/tiny-quota/instructor"),
        ("admin", f"{SERVICE}admin"),
        ("admin", SERVICE),
        ("admin", "/hub/admin"),
    ]
    for who, path in pages:
        page = users(who)
        goto(page, hub, path)
        assert_no_script_ran(page, f"{path} as {who}")
        if path.startswith(SERVICE) and path != SERVICE + "admin":
            expect(page.locator("body")).to_contain_text("Tiny Quota Taster <script>")
    if hub.server_model(name) is not None:
        hub.stop_server(name)


# -- 2. an instructor: roster, and assignments with grading progress --------------------------------------


def test_instructor_adds_and_imports_learners_on_the_course_page(hub, users):
    from playwright.sync_api import expect

    page = users("instructor")
    goto(page, hub, f"{SERVICE}courses/{GPU_COURSE}/instructor")
    expect(page.locator("table#roster")).to_be_visible()
    goto(page, hub, f"{SERVICE}courses/{GPU_COURSE}")
    roster = page.locator("table#roster")
    expect(roster).to_contain_text("learner1")
    expect(roster).to_contain_text("learner2")
    expect(page.locator("table#usage")).to_have_count(1)

    add = page.locator("form#roster-add")
    add.locator('[name="user"]').fill("learner7")
    add.get_by_role("button", name="Add").click()
    page.wait_for_load_state()
    expect(page.locator("table#roster")).to_contain_text("learner7")

    imp = page.locator("form#roster-import")
    imp.locator('textarea[name="csv"]').fill("user\nlearner8\nlearner9\n")
    imp.get_by_role("button", name="Import").click()
    page.wait_for_load_state()
    for learner in ("learner8", "learner9"):
        expect(page.locator("table#roster")).to_contain_text(learner)
    screenshot(page, "instructor-course")

    # the service agrees: learner7 now sees the roster course (hidden from those not on it)
    mine = hub.service("GET", "me", token=hub.token_for("learner7")).json()["courses"]
    assert GPU_COURSE in {c["id"] for c in mine}, mine


def test_instructor_releases_an_assignment_and_watches_grading_progress(hub, users):
    from playwright.sync_api import expect

    page = users("instructor")
    goto(page, hub, f"{SERVICE}courses/{GPU_COURSE}")
    assert page.locator("section#assignments").count() == 1, "no section#assignments on the instructor's course page"
    section = page.locator("section#assignments")

    def click(action):
        goto(page, hub, f"{SERVICE}courses/{GPU_COURSE}")
        pattern = (
            re.compile(rf"^{action}(?! feedback)", re.I) if action == "Release" else re.compile(rf"^{action}", re.I)
        )
        section.get_by_role("button", name=pattern).first.click()
        page.wait_for_load_state()

    click("Release")
    learner = hub.token_for("learner1")
    listing = hub.service("GET", f"courses/{GPU_COURSE}/assignments", token=learner).json()["assignments"]
    assert "ps1-matmul" in {a["assignment_id"] for a in listing}, listing
    expect(section).to_contain_text("ps1-matmul")

    # learner1 hands in what was released (unchanged), through the exchange's REST API
    files = hub.service("GET", f"courses/{GPU_COURSE}/assignments/ps1-matmul/files", token=learner)
    assert files.status_code == 200, files.text
    with tarfile.open(fileobj=io.BytesIO(files.content)) as tar:
        assert any(n.endswith(".ipynb") for n in tar.getnames()), tar.getnames()
    r = hub.service(
        "POST", f"courses/{GPU_COURSE}/assignments/ps1-matmul/submissions", token=learner, data=files.content
    )
    assert r.status_code == 201, r.text

    click("Collect")
    click("Autograde")
    t0 = time.monotonic()

    def graded():
        """The page shows the queue finished: a full progress bar, or learner1's job done."""
        goto(page, hub, f"{SERVICE}courses/{GPU_COURSE}")
        full = section.locator("progress").evaluate_all("bars => bars.some(b => b.max > 0 && b.value >= b.max)")
        return (
            full
            or section.locator("tr, li")
            .filter(has_text="learner1")
            .filter(has_text=re.compile(r"\bdone\b", re.I))
            .count()
        )

    wait_until("the grading progress shows the job done", graded, timeout=120, interval=2)
    print(f"autograde of one submission, as the page shows it: {time.monotonic() - t0:.1f} s")
    jobs = hub.service("GET", f"courses/{GPU_COURSE}/assignments/ps1-matmul/jobs").json()["jobs"]
    assert [j["state"] for j in jobs if j["student_id"] == "learner1"] == ["done"], jobs
    screenshot(page, "instructor-grading")
    # the grade distribution as a chart, and the grades as CSV, with the instructor's browser session
    expect(section.get_by_role("img", name=re.compile(r"grade", re.I)).first).to_be_visible()
    csv_link = section.locator('a[href*="grades?format=csv"]')
    expect(csv_link).to_have_count(1)
    grades = page.request.get(csv_link.evaluate("a => a.href"))
    assert grades.status == 200 and "learner1" in grades.text(), (grades.status, grades.text()[:300])

    click("Release feedback")
    feedback = hub.service("GET", f"courses/{GPU_COURSE}/assignments/ps1-matmul/feedback", token=learner)
    assert feedback.status_code == 200, feedback.text


# -- 3. an admin: allocations, charts, pool, exports --------------------------------------------------------


def test_admin_creates_an_allocation_and_sees_its_row_and_chart(hub, users):
    from playwright.sync_api import expect

    alloc = "EHPC-AIF-2027-BT01"
    page = users("admin")
    goto(page, hub, f"{SERVICE}admin")
    form = page.locator("form#create-allocation")
    form.locator('[name="id"]').fill(alloc)
    form.locator('[name="gpu_hours"]').fill("12")
    form.locator('[name="start"]').fill("2026-01-01")
    form.locator('[name="end"]').fill("2027-12-31")
    form.locator('[name="title"]').fill("Browser test allocation")
    form.get_by_role("button", name="Create allocation").click()
    page.wait_for_load_state()

    row = page.locator(f"tr#alloc-{alloc}")
    expect(row).to_be_visible()
    expect(row).to_contain_text("12")
    expect(row).to_contain_text("Browser test allocation")
    chart = page.locator("svg.burndown").and_(page.get_by_role("img", name=re.compile(re.escape(alloc))))
    expect(chart).to_be_visible()
    assert page.locator("svg.burndown").count() >= page.locator('table#allocations tr[id^="alloc-"]').count() >= 2
    created = hub.service("GET", f"allocations/{alloc}").json()
    assert created["granted_gpu_hours"] == 12, created

    # GPU pool: the device the hub was given, and its use over time
    expect(page.locator("svg#pool-usage")).to_be_visible()
    expect(page.locator("table", has_text="Device").first).to_contain_text("0")
    # exports download with the admin's browser session
    for fmt in ("csv", "json", "waldur", "car"):
        link = page.locator(f'a[href$="api/v1/usage?format={fmt}"]')
        expect(link.first).to_be_attached()
        r = page.request.get(hub.url + f"{SERVICE}api/v1/usage?format={fmt}")
        assert r.status == 200, (fmt, r.status, r.text()[:300])
    screenshot(page, "admin-allocations")

    # top up, then close, from the allocation's row
    topup = row.locator("form").filter(has=page.get_by_role("button", name=re.compile(r"top.?up", re.I)))
    topup.locator('input:not([type="hidden"])').first.fill("3")
    topup.get_by_role("button", name=re.compile(r"top.?up", re.I)).click()
    page.wait_for_load_state()
    assert hub.service("GET", f"allocations/{alloc}").json()["granted_gpu_hours"] == 15
    page.locator(f"tr#alloc-{alloc}").get_by_role("button", name=re.compile(r"^close", re.I)).click()
    page.wait_for_load_state()
    closed = hub.service("GET", f"allocations/{alloc}").json()
    assert closed["status"] == "closed", closed
    expect(page.locator(f"tr#alloc-{alloc}")).to_contain_text("closed")


def test_admin_figures_and_moments_read_alike_and_every_chart_has_a_title(hub, users):
    page = users("admin")
    goto(page, hub, f"{SERVICE}admin")
    cells = page.locator('table#allocations tr[id^="alloc-"] td:nth-child(n+3):nth-child(-n+6)').all_inner_texts()
    assert cells and all(re.fullmatch(r"-?\d+\.\d{2}|<0\.01", c.strip()) for c in cells), cells
    caption = page.locator("#pool-h ~ figure figcaption")
    assert "GPU-hours used per day" in caption.inner_text()
    assert page.locator("#pool-h ~ figure svg#pool-usage").count() == 1
    for path in ("admin", "", f"courses/{GPU_COURSE}"):
        goto(page, hub, SERVICE + path)
        assert not re.search(r"\d:\d\d:\d\d\.\d", page.inner_text("main")), (path, page.inner_text("main"))
        assert not re.search(r"\d\.\d{3,}\b", page.inner_text("main")), (path, page.inner_text("main"))


def test_a_shared_allocation_held_by_another_course_says_so(hub, users):
    name = "learner2"  # on the GPU course's roster; the MOOC shares its allocation
    r = hub.service("POST", f"courses/{MOOC}/enrol", token=hub.token_for(name), json={})
    assert r.status_code in (200, 201), r.text
    assert hub.spawn(name, GPU_COURSE).status_code in (201, 202)
    try:
        page = users(name)
        goto(page, hub, SERVICE)
        mooc = page.locator(f"section#course-{MOOC}").inner_text()
        assert "held by running sandboxes of the courses it pays for" in mooc, mooc
        assert "held by a running sandbox" not in mooc and "your running sandbox" not in mooc, mooc
        gpu = page.locator(f"section#course-{GPU_COURSE}").inner_text()
        assert "held by your running sandbox" in gpu, gpu
    finally:
        hub.stop_server(name)


# -- 4. 403s, in the browser and through the API; XSRF -----------------------------------------------------


def test_messages_on_pages_come_only_from_the_service(hub, users):
    from playwright.sync_api import expect

    page = users("flashy")  # a newcomer, enrolled nowhere
    planted = "Your account is suspended: pay at evil.example"
    goto(page, hub, f"{SERVICE}?error={planted}&ok={planted}")
    expect(page.locator(".flash-error, .flash-ok")).to_have_count(0)
    assert "evil.example" not in page.content()
    goto(page, hub, f"{SERVICE}courses/{MOOC}?error={planted}")
    assert "evil.example" not in page.content()
    # what an action says shows once, on the page it returns to
    goto(page, hub, SERVICE)
    page.locator(f"section#course-{MOOC}").get_by_role("button", name="Enrol").click()
    page.wait_for_load_state()
    expect(page.locator(".flash-ok")).to_have_text("You are enrolled in Deep Learning Basics.")
    assert "?" not in page.url
    page.reload()
    expect(page.locator(".flash-error, .flash-ok")).to_have_count(0)


def test_a_roster_course_tells_a_non_member_what_the_spawn_refusal_tells(hub, users):
    page = users("ada")  # not on the GPU course's roster
    refusal = hub.spawn("ada", GPU_COURSE, wait=False)
    assert refusal.status_code == 403, refusal.text
    message = refusal.json()["message"]
    goto(page, hub, f"{SERVICE}courses/{GPU_COURSE}", status=403)
    alert = page.locator("main [role=alert]").inner_text().strip()
    assert "GPU Programming Fundamentals" in alert and "roster" in alert, alert
    assert alert in message, (alert, message)  # one answer, on the page and from the spawn
    screenshot(page, "learner-403-roster-course")


def test_learners_and_other_instructors_get_403(hub, users):
    learner = users("learner1")
    goto(learner, hub, f"{SERVICE}admin", status=403)
    screenshot(learner, "learner-403-admin")
    goto(learner, hub, f"{SERVICE}courses/{GPU_COURSE}/instructor", status=403)
    other = users("instructor2")
    goto(other, hub, f"{SERVICE}courses/{GPU_COURSE}/instructor", status=403)
    goto(other, hub, f"{SERVICE}courses/old-mooc/instructor")  # their own course's instructor view
    assert other.locator("table#roster").count() == 1

    assert hub.service("GET", "allocations", token=hub.token_for("learner1")).status_code == 403
    assert hub.service("GET", "allocations").status_code == 200  # the admin token


def test_posts_without_the_xsrf_token_are_refused(hub, users, chromium):
    alloc = "XSRF-NOT-CREATED"
    admin = users("admin")
    goto(admin, hub, f"{SERVICE}admin")
    form = admin.locator("form#create-allocation")
    action = form.evaluate("f => f.action")
    assert action.startswith(hub.url + SERVICE), action
    assert form.locator('input[name="_xsrf"]').count() == 1
    fields = {"id": alloc, "gpu_hours": "5", "start": "2026-01-01", "end": "2027-12-31", "title": "forged"}

    # with the admin's cookies but no token: from the hub's own page, and from a script
    status = admin.evaluate(
        """([url, fields]) => fetch(url, {method: "POST", body: new URLSearchParams(fields), redirect: "manual",
                                          credentials: "same-origin"}).then(r => r.status)""",
        [action, fields],
    )
    assert status == 403, status
    assert admin.request.post(action, form=fields, max_redirects=0).status == 403

    # a form on another site that posts to the hub in the admin's browser (served by the test, not the network)
    forged = chromium.new_context(storage_state=admin.context.storage_state())
    try:
        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
        forged.route(
            "http://cross-site.invalid/**",
            lambda route: route.fulfill(
                content_type="text/html",
                body=f'<form method="post" action="{action}">{inputs}<button>Win a GPU</button></form>',
            ),
        )
        page = forged.new_page()
        page.goto("http://cross-site.invalid/")
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.click("button")
        assert posted.value.status == 403, posted.value.status
    finally:
        forged.close()
    assert hub.service("GET", f"allocations/{alloc}").status_code == 404


# -- 5. accessibility basics and no outside resources --------------------------------------------------


def assert_labelled(page, where):
    from playwright.sync_api import expect

    missing = unlabelled_controls(page)
    assert not missing, f"{where}: form controls without a label: {missing}"
    # every <label>ed control is found by its label text, as a person (or get_by_label) finds it
    texts = page.eval_on_selector_all(
        "label[for]",
        """labels => labels
        .filter(l => l.control && ["INPUT", "SELECT", "TEXTAREA"].includes(l.control.tagName))
        .map(l => l.textContent.replace(/\\s+/g, " ").trim()).filter(Boolean)""",
    )
    for text in texts:
        expect(page.get_by_label(text, exact=True).first).to_be_attached()


def test_every_form_control_has_a_label_and_nothing_loads_from_outside(hub, users, seen):
    from playwright.sync_api import expect

    anonymous = users.context().new_page()
    goto(anonymous, hub, "/hub/login")
    expect(anonymous.get_by_label("Username")).to_be_visible()
    expect(anonymous.get_by_label("Password")).to_be_visible()
    assert_labelled(anonymous, "/hub/login")
    anonymous.context.close()

    # the spawn form: one card per course; the course that cannot start is disabled, with the reason
    learner = users("learner1")
    goto(learner, hub, "/hub/spawn")
    for course in (MOOC, GPU_COURSE, "old-mooc"):
        expect(
            learner.locator(f'label.aifhub-card input[type="radio"][name="course"][value="{course}"]')
        ).to_have_count(1)
    expect(learner.locator(f'input[name="course"][value="{GPU_COURSE}"]')).to_be_enabled()
    ended = learner.locator("label.aifhub-card", has=learner.locator('input[value="old-mooc"]'))
    expect(ended.locator("input")).to_be_disabled()
    expect(ended.locator("p.aifhub-why")).to_contain_text(re.compile(r"\S"))
    expect(learner.get_by_role("button", name="Start")).to_be_visible()
    assert_labelled(learner, "/hub/spawn")
    screenshot(learner, "spawn-form")

    for who, path in (
        ("learner1", SERVICE),
        ("learner1", f"{SERVICE}courses/{GPU_COURSE}"),
        ("instructor", f"{SERVICE}courses/{GPU_COURSE}"),
        ("admin", f"{SERVICE}admin"),
        ("admin", SERVICE),
        ("ada", "/hub/home"),
    ):
        page = users(who)
        goto(page, hub, path)
        assert page.locator("h1").count() >= 1 or path == "/hub/home", path
        assert_labelled(page, f"{path} as {who}")

    print(
        f"requests seen: {len(seen.urls)}, JupyterLab: {sum('/user/' in u for u in seen.urls)}, websockets: {sum(u.startswith('ws') for u in seen.urls)}"
    )
    outside = seen.outside(hub.url)
    assert seen.urls and not outside, f"requests to outside the hub: {outside}"
