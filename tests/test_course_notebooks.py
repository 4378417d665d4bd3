"""Execute the example courses' notebooks and grade their assignments with nbgrader.

Two kinds of checks:

* every teaching notebook ``courses/<course>/*.ipynb`` runs top to bottom
  without an error (nbclient, kernel ``python3``, cwd = the course folder);
* every nbgrader source assignment ``courses/<course>/source/<assignment>/``
  goes through a real nbgrader round trip in a temporary course directory:
  ``generate_assignment``; the source notebook (with solutions) is submitted
  by ``alice`` and the released notebook (without solutions) by ``bob``; both
  are autograded, and the gradebook must show full marks for alice and zero
  for bob.

The module is self-contained: it uses no fixtures from conftest.py.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = Path(__file__).resolve().parent.parent
COURSES = REPO_ROOT / "courses"

CELL_TIMEOUT_S = 120
KERNEL = "python3"

# nbgrader 0.9 + SQLAlchemy 2 warn from inside Gradebook.add_submission; harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Object of type <Submitted")

TEACHING_NOTEBOOKS = sorted(COURSES.glob("*/*.ipynb"))
ASSIGNMENTS = sorted(
    (course_dir.name, assignment_dir.name)
    for course_dir in COURSES.glob("*")
    if (course_dir / "source").is_dir()
    for assignment_dir in (course_dir / "source").iterdir()
    if assignment_dir.is_dir() and any(assignment_dir.glob("*.ipynb"))
)


def _rel(path):
    return path.relative_to(REPO_ROOT).as_posix()


def _cell_errors(nb):
    errors = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"cell {index}: {output.get('ename')}: {output.get('evalue')}")
    return errors


def test_courses_are_discovered():
    assert TEACHING_NOTEBOOKS, f"no teaching notebooks found under {_rel(COURSES)}"
    assert ASSIGNMENTS, f"no nbgrader source assignments found under {_rel(COURSES)}"


@pytest.mark.parametrize("notebook", TEACHING_NOTEBOOKS, ids=_rel)
def test_teaching_notebook_runs(notebook):
    nb = nbformat.read(str(notebook), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{_rel(notebook)}: outputs must be cleared before committing"

    client = nbclient.NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        allow_errors=True,  # collect every failing cell rather than stop at the first one
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    client.execute()
    errors = _cell_errors(nb)
    assert not errors, f"{_rel(notebook)} raised:\n" + "\n".join(errors)


def _nbgrader_api(course_root, course_id):
    from traitlets.config import Config
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = Config()
    config.CourseDirectory.root = str(course_root)
    config.CourseDirectory.course_id = course_id
    config.Exchange.root = str(course_root / "exchange")  # keep nbgrader away from /srv/nbgrader
    config.Execute.timeout = CELL_TIMEOUT_S
    # The same settings as a config file, as an instructor would keep them in the course root.
    (course_root / "nbgrader_config.py").write_text(
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.root = {str(course_root)!r}\n"
        f"c.CourseDirectory.course_id = {course_id!r}\n"
        f"c.Exchange.root = {str(course_root / 'exchange')!r}\n"
        f"c.Execute.timeout = {CELL_TIMEOUT_S}\n"
    )
    coursedir = CourseDirectory(config=config)
    return NbGraderAPI(coursedir=coursedir, config=config)


def _check(result, what):
    assert result.get("success"), f"nbgrader {what} failed:\n{result.get('error', '')}\n{result.get('log', '')}"


def _submit(src_dir, course_root, student, assignment):
    dest = course_root / "submitted" / student / assignment
    shutil.copytree(src_dir, dest)
    # what `nbgrader collect` would leave next to a submission
    (dest / "timestamp.txt").write_text("2026-11-10 12:00:00.000000 UTC\n")
    return dest


@pytest.mark.parametrize("course_id, assignment", ASSIGNMENTS, ids=[f"{c}/{a}" for c, a in ASSIGNMENTS])
def test_assignment_autogrades(course_id, assignment, tmp_path, monkeypatch):
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook

    # nbgrader shells out to `alembic` when it creates a gradebook: make the
    # one installed next to this interpreter findable.
    bindir = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ.get("PATH", ""))
    # nbgrader also reads nbgrader_config.py from the working directory.
    monkeypatch.chdir(tmp_path)

    course_root = tmp_path
    shutil.copytree(COURSES / course_id / "source", course_root / "source")
    api = _nbgrader_api(course_root, course_id)

    _check(api.generate_assignment(assignment), "generate_assignment")
    release_dir = course_root / "release" / assignment
    released = sorted(release_dir.glob("*.ipynb"))
    assert released, f"generate_assignment produced no notebook in {release_dir}"
    for path in released:
        text = path.read_text()
        assert "### BEGIN SOLUTION" not in text
        assert "### BEGIN HIDDEN TESTS" not in text

    with Gradebook(api.coursedir.db_url, course_id) as gb:
        gb.update_or_create_student("alice", first_name="Alice", last_name="Solver")
        gb.update_or_create_student("bob", first_name="Bob", last_name="Blank")

    # alice hands in the instructor's solution, bob the untouched release
    alice_dir = _submit(course_root / "source" / assignment, course_root, "alice", assignment)
    _submit(release_dir, course_root, "bob", assignment)
    # the source folder may hold the instructor's checkpoints etc.; only notebooks matter
    assert sorted(p.name for p in alice_dir.glob("*.ipynb")) == [p.name for p in released]

    for student in ("alice", "bob"):
        _check(api.autograde(assignment, student), f"autograde {student}")
        autograded = sorted((course_root / "autograded" / student / assignment).glob("*.ipynb"))
        assert [p.name for p in autograded] == [p.name for p in released]

    with Gradebook(api.coursedir.db_url, course_id) as gb:
        alice = gb.find_submission(assignment, "alice")
        bob = gb.find_submission(assignment, "bob")
        max_score = gb.find_assignment(assignment).max_score
        assert max_score > 0
        assert alice.max_score == max_score
        failed = {
            f"{grade.notebook.name}:{grade.name}": (grade.score, grade.max_score)
            for nb in alice.notebooks
            for grade in nb.grades
            if grade.score != grade.max_score
        }
        assert alice.score == max_score, f"alice lost points: {failed}"
        assert bob.score == 0, f"bob scored {bob.score} without writing any code"
        assert alice.timestamp is not None
