"""Course materials for pods: what the service packs (aifhub.kube.materials.course_archive) and how the
course-materials init container unpacks it (never replacing a learner's file, never leaving the folder)."""

import io
import os
import tarfile

from aifhub.kube.materials import course_archive, unpack


def names(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return sorted(m.name for m in tar.getmembers() if m.isfile())


def test_the_archive_holds_what_learners_get_and_no_links(tmp_path):
    course = tmp_path / "course"
    (course / "source" / "ps1").mkdir(parents=True)
    (course / "source" / "ps1" / "ps1.ipynb").write_text("solutions")
    (course / "data").mkdir()
    (course / "data" / "x.csv").write_text("1,2")
    (course / "01-intro.ipynb").write_text("{}")
    (course / "course.yaml").write_text("id: course")
    (course / ".secret").write_text("hidden")
    (course / "link.ipynb").symlink_to("/etc/passwd")
    assert names(course_archive(course)) == ["01-intro.ipynb", "data/x.csv"]


def test_unpacking_keeps_the_learners_files_and_refuses_names_that_leave(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in [
            ("01-intro.ipynb", b"fresh"),
            ("data/x.csv", b"1,2"),
            ("../outside.txt", b"no"),
            ("/abs.txt", b"no"),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
    home = tmp_path / "home"
    home.mkdir()
    (home / "01-intro.ipynb").write_text("my own work")
    added, kept = unpack(buf.getvalue(), home)
    assert (added, kept) == (1, 1)
    assert (home / "01-intro.ipynb").read_text() == "my own work" and (home / "data" / "x.csv").read_text() == "1,2"
    assert (
        not (tmp_path / "outside.txt").exists()
        and not os.path.lexists(home / "evil")
        and not (home / "abs.txt").exists()
    )
