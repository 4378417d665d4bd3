"""A hub that does not run as root: sandboxes still work, and everyone is told they are not isolated."""

import json
import os
import shutil

import nbformat
import pytest
from hubrunner import REPO, RunningHub

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to drop to an unprivileged user (setpriv)"
)

NOBODY = 65534


class UnprivilegedHub(RunningHub):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.args = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *self.args]


@pytest.fixture(scope="module")
def hub(hub_dir):
    shutil.copytree(REPO / "courses", hub_dir / "courses")
    (hub_dir / "sandbox_images").symlink_to(REPO / "sandbox_images")
    for path in (hub_dir, hub_dir / "courses"):
        os.chown(path, NOBODY, NOBODY)
    for path in (hub_dir / "courses").rglob("*"):  # a root run may have made the sources private
        path.chmod(path.stat().st_mode | (0o755 if path.is_dir() else 0o644))
    hub = UnprivilegedHub(hub_dir / "state", hub_dir / "courses", gpus="none", log_path=hub_dir / "up.log")
    hub.start()
    yield hub
    hub.stop()


def test_sandboxes_work_and_the_warning_is_everywhere(hub):
    response, events = hub.progress_events("learner", "dl-basics")
    assert response.status_code in (201, 202), response.text
    assert any("not isolated" in e.get("message", "") for e in events), events
    assert hub.run_in_kernel("learner", "import os; print(os.getuid())").strip() == str(NOBODY)
    hub.stop_server("learner")
    assert "NOT isolated" in hub.logs()

    home = hub.api("GET", "users/learner").json()  # the hub is up and answering as nobody
    assert home["name"] == "learner"
    import requests

    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    from hubrunner import PASSWORD

    s.post(
        f"{hub.url}/hub/login",
        data={"username": "learner", "password": PASSWORD, "_xsrf": s.cookies.get("_xsrf", path="/hub/")},
        timeout=30,
    )
    form = s.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert "sandboxes are not isolated" in form
    home_page = s.get(f"{hub.url}/hub/home", timeout=30).text
    assert "not isolated" in home_page


NETWORK_PROBE = """import os, socket
for port in ({ports}):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        print("REACHED", port)
    except OSError as exc:
        print("NO NETWORK", port, type(exc).__name__)
print("UID", os.getuid())
"""


def test_grading_works_without_root_and_kernels_still_have_no_network(hub):
    from gradingkit import ASSIGNMENT, COURSE, solution_notebook, submit, wait_jobs, with_cell

    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release").status_code == 200
    hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for("learner"))
    nb = solution_notebook()
    probe = NETWORK_PROBE.format(
        ports=f"{hub.port}, {json.loads((hub.state_dir / 'ports.json').read_text())['service']}"
    )
    nb = with_cell(
        nb,
        "softmax",
        probe + next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "softmax"),
    )
    assert submit(hub, "learner", nb).status_code == 201
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde")
    assert r.status_code == 202, r.text
    job = wait_jobs(hub, [j["id"] for j in r.json()["jobs"]])["learner"]
    assert job["state"] == "done" and job["score"] == job["max_score"] == 10, job

    graded = hub.state_dir / "grading" / COURSE / "autograded" / "learner" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    text = "".join(
        o.get("text", "") for c in nbformat.read(str(graded), as_version=4).cells for o in c.get("outputs", [])
    )
    assert text.count("NO NETWORK") == 2 and "REACHED" not in text, text
    assert f"UID {NOBODY}" in text  # the service's own uid: not isolated from it, as the docs and log say
    assert "kernels under the service's uid (not root), network unshare" in hub.logs()
