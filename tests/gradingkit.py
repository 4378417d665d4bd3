"""Helpers for the grading tests and benchmark: notebooks to hand in, archives, the REST calls."""

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
COURSE = "dl-basics"
ASSIGNMENT = "ps1-digits"
SOURCE = REPO / "courses" / COURSE / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


# The start of a cell that tries what a graded submission must never reach: each attempt prints
# "ATTEMPT <what> failed <exception>" (or SUCCEEDED); env_secret fails unless the environment is clean.
PROBE_PRELUDE = """import os, socket
def attempt(what, fn):
    try:
        got = fn()
        print("ATTEMPT", what, "SUCCEEDED", repr(got)[:60])
    except Exception as exc:
        print("ATTEMPT", what, "failed", type(exc).__name__)
def env_secret():
    found = [k for k in os.environ if any(w in k for w in ("TOKEN", "SECRET", "PASSWORD"))
             or k.startswith(("JUPYTERHUB", "AIFHUB_INTERNAL"))]
    assert not found, found
    raise LookupError("no secrets in the environment")
"""


def solution_notebook():
    return nbformat.read(str(SOURCE), as_version=4)


def with_cell(nb, grade_id, source):
    """A copy of ``nb`` whose cell ``grade_id`` holds ``source``."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return nb
    raise KeyError(grade_id)


def with_extra_cells(nb, sources):
    """A copy of ``nb`` with code cells the learner added at the end (nbgrader runs them too)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in sources)
    return nb


def blank_notebook():
    """What a learner who writes nothing hands in: the solution cells raise NotImplementedError."""
    nb = solution_notebook()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            head = cell.source.split("### BEGIN SOLUTION")[0]
            cell.source = head + "raise NotImplementedError()\n"
    return nb


def archive(files):
    """A tar.gz of ``{name: bytes or notebook}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            if not isinstance(data, bytes):
                data = nbformat.writes(data).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def notebook_b64(nb):
    return base64.b64encode(nbformat.writes(nb).encode()).decode()


def submit(hub, user, nb, course=COURSE, assignment=ASSIGNMENT, **params):
    return hub.service(
        "POST",
        f"courses/{course}/assignments/{assignment}/submissions",
        token=hub.token_for(user),
        data=archive({f"{assignment}.ipynb": nb}),
        params=params or None,
    )


def instructor_cli(hub, *args, check=True):
    """``aifhub ARGS --url HUB`` with the instructor's own token (not the admin's)."""
    out = subprocess.run(
        [sys.executable, "-m", "aifhub", *args, "--url", hub.url],
        capture_output=True,
        text=True,
        env=dict(os.environ, AIFHUB_TOKEN=hub.token_for("instructor")),
    )
    if check:
        assert out.returncode == 0, f"aifhub {' '.join(args)} failed: {out.stdout}\n{out.stderr}"
    return out


def nbgrader_in_kernel(hub, user, *args):
    """Run ``nbgrader ARGS`` from a kernel in ``user``'s sandbox, as a learner would in a notebook (``!nbgrader``)."""
    code = (
        f"import subprocess\nr = subprocess.run(['nbgrader', *{list(args)!r}], capture_output=True, text=True)\n"
        "print('RC', r.returncode)\nprint(r.stdout)\nprint(r.stderr)"
    )
    return hub.run_in_kernel(user, code, timeout=120)


def wait_jobs(hub, ids, timeout=150):
    deadline = time.monotonic() + timeout
    query = "&".join(f"id={i}" for i in ids)
    while True:
        jobs = hub.service("GET", f"courses/{COURSE}/jobs?{query}").json()["jobs"]
        if all(j["state"] in ("done", "failed") for j in jobs):
            return {j["student_id"]: j for j in jobs}
        assert time.monotonic() < deadline, f"grading did not finish: {jobs}"
        time.sleep(0.5)
