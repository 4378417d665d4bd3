"""Helpers for the grading tests and benchmark: notebooks to hand in, archives, the REST calls."""

import base64
import io
import json
import tarfile
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
COURSE = "dl-basics"
ASSIGNMENT = "ps1-digits"
SOURCE = REPO / "courses" / COURSE / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


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
    return hub.service("POST", f"courses/{course}/assignments/{assignment}/submissions", token=hub.token_for(user),
                       data=archive({f"{assignment}.ipynb": nb}), params=params or None)
