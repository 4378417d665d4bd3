"""The grading directory as root leaves it for the course's instructors: nothing to plant a link in, and
links an older version let them plant removed, never followed (GradingManager.share, #15 item 1)."""

import os
import stat

import pytest
from conftest import AS_ROOT

from aifhub.grading.coursedir import GradingDir
from aifhub.grading.manager import GradingManager
from aifhub.state.db import Database, sqlite_url

pytestmark = pytest.mark.skipif(not AS_ROOT, reason="sharing with a course's group happens only as root")
COURSE = "dl-basics"


@pytest.fixture
def grading(tmp_path):
    db = Database(sqlite_url(tmp_path / "aifhub.sqlite"))
    manager = GradingManager(tmp_path / "state", db, isolated=True)
    gd = GradingDir(manager.root, COURSE).ensure()
    (gd / "gradebook.db").write_bytes(b"")
    (gd / "autograded" / "erin" / "ps1").mkdir(parents=True)
    (gd / "autograded" / "erin" / "ps1" / "ps1.ipynb").write_text("{}")
    secret = tmp_path / "secret"
    secret.write_text("internal token")
    secret.chmod(0o600)
    return manager, gd, secret


def modes(path):
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_share_gives_the_group_read_only_steps_and_a_sticky_course_folder(grading):
    manager, gd, secret = grading
    manager.share(COURSE)
    gid = manager.course_gid(COURSE)
    assert modes(gd.root) == (0, gid, 0o3770)  # new files (SQLite's journal), but nobody renames root's
    for step in ("source", "release", "submitted", "autograded", "feedback"):
        assert modes(gd / step) == (0, gid, 0o2750), step
    assert modes(gd / "autograded" / "erin" / "ps1" / "ps1.ipynb")[1:] == (gid, 0o640)
    assert modes(gd / "gradebook.db") == (0, gid, 0o660)
    assert modes(gd / "exchange") == (0, 0, 0o700)  # submissions as received: never the group's


def test_links_left_in_a_grading_directory_are_removed_not_followed(grading, caplog):
    manager, gd, secret = grading
    planted = [
        gd / "autograded" / "erin" / "ps1" / "leak.txt",
        gd / "feedback" / "leak",
        gd / "evil",
        gd / "gradebook.db-journal",
    ]
    for link in planted:
        link.symlink_to(secret)
    os.mkfifo(gd / "release" / "pipe")
    manager.share(COURSE)
    assert secret.read_text() == "internal token" and modes(secret) == (0, 0, 0o600)
    assert not any(os.path.lexists(p) for p in planted) and not (gd / "release" / "pipe").exists()
    assert caplog.text.count("Removed") == 5


def test_a_hard_link_in_a_grading_directory_is_never_given_to_the_group(grading):
    manager, gd, secret = grading
    os.link(secret, gd / "autograded" / "erin" / "ps1" / "notes.txt")
    manager.share(COURSE)
    assert modes(secret) == (0, 0, 0o600)
