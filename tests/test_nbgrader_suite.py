"""nbgrader's own tests of its student commands against aifhub's exchange (scripts/nbgrader-tests):
a few of them here, so the harness keeps working; `make nbgrader-tests` runs them all."""

import importlib
import os
import re
import subprocess
import sys

from nbgrader_suite.plugin import DELIBERATE, MODULES

from servicekit import REPO

# one of each command, one test that reads what the service stored, one deliberate change
SUBSET = (
    "test_fetch_multiple_courses or test_submit_exclude or test_submit_with_student_id "
    "or test_list_inbound_no_random_string"
)


def test_nbgraders_tests_pass_against_aifhubs_exchange():
    out = subprocess.run(
        [str(REPO / "scripts" / "nbgrader-tests"), "-q", "-k", SUBSET],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    counts = {what: int(n) for n, what in re.findall(r"(\d+) (passed|xfailed|failed|xpassed|skipped|error)", summary)}
    assert counts == {"passed": 3, "xfailed": 1}, summary


def test_every_deliberate_change_names_a_test_of_nbgrader_and_is_documented():
    docs = (REPO / "docs" / "grading.md").read_text()
    for key in DELIBERATE:
        module, cls, name = key.split("::")
        assert module[:-3] in MODULES, key
        tests = getattr(importlib.import_module(f"nbgrader.tests.apps.{module[:-3]}"), cls)
        assert callable(getattr(tests, name, None)), f"nbgrader has no test {key}"
        assert f"`{name}`" in docs, f"docs/grading.md does not list {name}"
