"""Root follows no learner's or instructor's link: each attack tried on a real hub run as root (#14, #15 item 1).

Learners plant their attacks in their own folders (from a notebook, or a process of theirs left running)
and start their sandbox again; learners hand in archives holding links, FIFOs, devices and over-long
names; an instructor plants links where their sandbox can write in the course's grading directory. Each
test checks that root's file outside those folders is untouched and that the spawn or grading works.
"""

import io
import json
import os
import subprocess
import tarfile
import time
import uuid

import pytest
from conftest import AS_ROOT, start_hub
import nbformat
from gradingkit import ASSIGNMENT, COURSE, archive, solution_notebook, submit, with_extra_cells

pytestmark = pytest.mark.skipif(not AS_ROOT, reason="sandboxes run as learners' uids only when the hub runs as root")

SERVICE_ARGS = (
    "--GradingManager.workers=1 --GradingManager.cell_timeout=20 --GradingManager.notebook_timeout=120 "
    "--GradingManager.scratch_size=64M"
)
SECRET = "root's secret"


def add_materials(courses):
    """A folder of materials (data/more/), so that a link can stand where a folder belongs."""
    more = courses / COURSE / "data" / "more"
    more.mkdir(parents=True)
    (courses / COURSE / "data" / "table.csv").write_text("a,b\n1,2\n")
    (more / "notes.txt").write_text("notes")
    many = courses / COURSE / "data" / "many"  # enough files that copying them takes a while to race
    many.mkdir()
    for name in MANY:
        (many / name).write_text(name)


MANY = [f"part-{i:03d}.txt" for i in range(150)]


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="none", prepare_courses=add_materials, env={"AIFHUB_SERVICE_ARGS": SERVICE_ARGS})
    yield hub
    hub.stop()


def make_victim(folder):
    """Root's folder (others may enter it, not write it) with a file only root may read."""
    (folder / "inner").mkdir(parents=True)
    folder.chmod(0o755)
    (folder / "secret").write_text(SECRET)
    (folder / "secret").chmod(0o600)
    return folder


@pytest.fixture(scope="module")
def victim(hub_dir):
    """What the learners' spawn-time attacks aim at."""
    return make_victim(hub_dir / "victim")


@pytest.fixture(scope="module")
def grading_victim(hub_dir):
    """What the hand-ins and the instructor's links aim at."""
    return make_victim(hub_dir / "grading-victim")


def untouched(victim):
    """Nothing new in root's folder, nothing given away, nothing changed."""
    found = sorted(str(p.relative_to(victim)) for p in victim.rglob("*"))
    assert found == ["inner", "secret"], found
    for path in (victim, victim / "inner", victim / "secret"):
        assert path.stat().st_uid == 0 and path.stat().st_gid == 0, path
    assert oct(victim.stat().st_mode & 0o777) == oct(0o755)
    assert oct((victim / "secret").stat().st_mode & 0o777) == oct(0o600)
    assert (victim / "secret").read_text() == SECRET


def work(hub, user):
    return hub.state_dir / "work" / user / COURSE


def uid_of(hub, user):
    return (hub.state_dir / "work" / user).stat().st_uid


def as_learner(hub, user, code, wait=True):
    """Python ``code`` run as ``user``'s own uid in their home (what a process of theirs can do)."""
    uid = uid_of(hub, user)

    def drop():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    proc = subprocess.Popen(
        ["/usr/bin/python3", "-c", code],
        preexec_fn=drop,
        cwd=str(work(hub, user).parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return out


def respawn(hub, users):
    """Stop the users' sandboxes and start them again, all at once; every spawn must work."""
    for user in users:
        hub.ensure_user(user)
        if hub.server_model(user) is not None:
            hub.stop_server(user)
    for user in users:
        r = hub.spawn(user, COURSE, wait=False)
        assert r.status_code in (201, 202), r.text
    for user in users:
        hub.wait_ready(user)


PLANT = {
    # a dangling link where a material was: root used to create its target and give it to the learner
    "alice": """
import os
os.remove("dl-basics/README.md")
os.symlink("{victim}/new.pth", "dl-basics/README.md")
import shutil
shutil.rmtree("dl-basics/data")
os.symlink("{victim}", "dl-basics/data")            # a link where a folder of materials was
os.remove("dl-basics/01-digits-logistic.ipynb")
os.mkfifo("dl-basics/01-digits-logistic.ipynb")      # a FIFO: opening it would hang the spawn
import socket
os.remove("dl-basics/02-mlp-from-scratch.ipynb")
socket.socket(socket.AF_UNIX).bind("dl-basics/02-mlp-from-scratch.ipynb")
""",
    # the course folder itself replaced by a link to an existing root file: root used to chmod and chown it
    "bob": """
import os
os.rename("dl-basics", "old-work")
os.symlink("{victim}/secret", "dl-basics")
""",
    # a FIFO where a material was, and a tree deeper than PATH_MAX inside a folder of materials
    "dave": """
import os
os.chdir("dl-basics/data/more")
for i in range(30):
    os.mkdir("d" * 200)
    os.chdir("d" * 200)
open("deep.txt", "w").write("deep")
os.chdir("{home}")
os.remove("dl-basics/README.md")
os.mkfifo("dl-basics/README.md")
""",
    # a FIFO as the course folder
    "gina": """
import os
os.rename("dl-basics", "old-work")
os.mkfifo("dl-basics")
""",
}


@pytest.fixture(scope="module")
def attacked(hub, victim):
    """Every learner starts a sandbox, plants their attack, and all start again; returns the hub's log."""
    users = sorted(PLANT)
    respawn(hub, users + [LONG])
    hub.run_in_kernel("alice", "import os; os.chdir(os.path.expanduser('~'))\n" + PLANT["alice"].format(victim=victim))
    for user in users[1:]:
        as_learner(hub, user, PLANT[user].format(victim=victim, home=work(hub, user).parent))
    respawn(hub, users)
    return hub.logs()


LONG = "l" * 300  # a user name longer than a file name may be


def test_a_user_name_too_long_for_a_folder_still_starts(hub, attacked):
    assert hub.server_model(LONG)["ready"]
    homes = [p for p in (hub.state_dir / "work").iterdir() if p.name.startswith("l" * 100 + "-")]
    assert len(homes) == 1 and (homes[0] / COURSE / "README.md").exists(), homes


def test_a_dangling_link_where_a_material_was_creates_nothing(hub, victim, attacked):
    untouched(victim)
    readme = work(hub, "alice") / "README.md"
    assert readme.is_symlink() and not (victim / "new.pth").exists()
    assert f"Skipped {readme}" in attacked and "symbolic link" in attacked
    assert (work(hub, "alice") / "course.yaml").exists() is False  # materials otherwise as before


def test_a_link_to_an_existing_root_file_is_not_chowned_or_chmodded(hub, victim, attacked):
    untouched(victim)
    folder = work(hub, "bob")
    assert folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == uid_of(hub, "bob")
    assert (folder / "README.md").read_text() == (hub.courses_dir / COURSE / "README.md").read_text()
    aside = [p for p in folder.parent.iterdir() if p.name.startswith(f"{COURSE}.not-a-folder-")]
    assert len(aside) == 1 and aside[0].is_symlink(), aside
    assert f"Moved {folder} aside" in attacked


def test_a_link_to_a_folder_is_never_entered(hub, victim, attacked):
    untouched(victim)
    assert (work(hub, "alice") / "data").is_symlink()  # left as the learner made it
    bob = work(hub, "bob")  # whose course folder was a link: made anew, materials in it
    assert (bob / "data" / "more" / "notes.txt").exists() and (bob / "data" / "many" / MANY[-1]).exists()


def test_fifo_socket_and_deep_paths_neither_hang_nor_break_the_spawn(hub, victim, attacked):
    untouched(victim)
    alice, dave, gina = work(hub, "alice"), work(hub, "dave"), work(hub, "gina")
    assert "a FIFO" in attacked and "a socket" in attacked
    assert (dave / "data" / "table.csv").exists() and dave.is_dir()
    assert gina.is_dir() and (gina / "README.md").exists() and f"Moved {gina} aside" in attacked
    for user in ("alice", "dave", "gina"):
        assert hub.server_model(user)["ready"], user
    assert alice.stat().st_uid == uid_of(hub, "alice")


# what a process of the learner's left running does while root copies the materials in: the folder of
# materials and README.md swap between the real thing and links to root's folder, as fast as it can
SWAPPER = """
import os, time
os.chdir("dl-basics")
end = time.time() + 90
while time.time() < end:
    try:
        os.symlink("{victim}/race.pth", ".readme")
        os.rename(".readme", "README.md")  # where root is about to create the file
        os.remove("README.md")
    except OSError:
        pass
    try:
        os.rename("data", ".data")  # the real folder root is filling, swapped for a link and back
        os.symlink("{victim}", "data")
        os.remove("data")
        os.rename(".data", "data")
    except OSError:
        pass
"""


def test_links_swapped_in_while_the_sandbox_starts_again_are_never_followed(hub, hub_dir):
    """The swap races root's copy of the materials: before each start the learner removes the materials
    (so that root copies them anew), and a process of theirs swaps links in while the sandbox starts."""
    user, victim = "erin", make_victim(hub_dir / "race-victim")
    respawn(hub, [user])
    for _ in range(2):
        as_learner(
            hub,
            user,
            "import shutil, os\nfor p in ('dl-basics/data', 'dl-basics/.data'): shutil.rmtree(p, True)\n"
            "for p in ('dl-basics/README.md', 'dl-basics/.readme'):\n    os.path.lexists(p) and os.remove(p)",
        )
        swapper = as_learner(hub, user, SWAPPER.format(victim=victim), wait=False)
        try:
            respawn(hub, [user])
        finally:
            swapper.kill()
            swapper.wait()
        untouched(victim)
    assert hub.server_model(user)["ready"]


# -- hand-ins: the service unpacks them as root ------------------------------------------------------


@pytest.fixture(scope="module")
def released(hub):
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release")
    assert r.status_code == 200, r.text
    assert hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for("frank")).status_code in (200, 201)


def tar_of(*members):
    """A tar.gz of the released notebook plus ``members`` (TarInfo, or (TarInfo, data))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        nb = json.dumps(solution_notebook()).encode()
        info = tarfile.TarInfo(f"{ASSIGNMENT}.ipynb")
        info.size = len(nb)
        tar.addfile(info, io.BytesIO(nb))
        for m in members:
            info, data = m if isinstance(m, tuple) else (m, b"")
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def member(name, kind=tarfile.REGTYPE, linkname="", data=b""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, data


BAD_UPLOADS = {
    "hard link to root's file": (member("notes.txt", tarfile.LNKTYPE, "{victim}/secret"), "only plain files"),
    "hard link up the tree": (member("notes.txt", tarfile.LNKTYPE, "../../../../gradebook.db"), "only plain files"),
    "symbolic link": (member("leak", tarfile.SYMTYPE, "{victim}/secret"), "only plain files"),
    "FIFO": (member("pipe", tarfile.FIFOTYPE), "only plain files"),
    "device": (member("null", tarfile.CHRTYPE), "only plain files"),
    "name over 255 bytes": (member("n" * 300, data=b"x"), "longer than 255 bytes"),
    "path over PATH_MAX": (member("/".join(["d" * 200] * 25) + "/f", data=b"x"), "characters in the upload"),
    "path up the tree": (member("../../escape.txt", data=b"x"), "refusing the path"),
    "a file that is also a folder": ([member("x", data=b"1"), member("x/y", data=b"2")], "also a file"),
    "the same file twice": ([member("twice.txt", data=b"1"), member("twice.txt", data=b"2")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_uploads_with_links_specials_or_odd_names_are_a_clear_400(hub, released, grading_victim, case):
    members, words = BAD_UPLOADS[case]
    members = members if isinstance(members, list) else [members]
    for info, _data in members:
        info.linkname = info.linkname.format(victim=grading_victim)
    r = hub.service(
        "POST",
        f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
        token=hub.token_for("frank"),
        data=tar_of(*members),
    )
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert words in r.json()["message"], r.json()
    untouched(grading_victim)
    inbound = hub.state_dir / "grading" / COURSE / "exchange" / "inbound"
    assert not [p for p in inbound.rglob(".*")], "a refused hand-in left a temporary folder"


def autograde(hub, students):
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={"students": students})
    assert r.status_code == 202, r.text
    ids = [j["id"] for j in r.json()["jobs"]]
    deadline = time.monotonic() + 180
    while True:
        jobs = hub.service("GET", f"courses/{COURSE}/jobs?" + "&".join(f"id={i}" for i in ids)).json()["jobs"]
        if all(j["state"] in ("done", "failed") for j in jobs):
            return {j["student_id"]: j for j in jobs}
        assert time.monotonic() < deadline, jobs
        time.sleep(0.5)


INSTRUCTOR_PLANTS = """
import os
root = os.path.realpath("course-grading")
def plant(rel, target="{victim}/secret"):
    try:
        os.symlink(target, os.path.join(root, rel))
        print("PLANTED", rel)
    except OSError as exc:
        print("REFUSED", rel, type(exc).__name__)
for rel in ("autograded/frank/ps1-digits/leak.html", "autograded/frank/leak", "autograded/leak", "submitted/leak",
            "feedback/leak", "release/leak", "source/leak", "exchange/leak", "exchange/feedback/frank/leak"):
    plant(rel)
plant("gradebook.db-journal")      # where SQLite writes as root
plant("evil")                      # the course folder takes new files (for formgrader's SQLite journal)
try:
    os.rename(os.path.join(root, "feedback"), os.path.join(root, "feedback.moved"))
    print("PLANTED rename")
except OSError as exc:
    print("REFUSED rename", type(exc).__name__)
print("GRADEBOOK", os.access(os.path.join(root, "gradebook.db"), os.W_OK))
"""


# what the graded code of the hand-in tries: links where root writes its pid and connection files
GRADED_PLANTS = """import os
scratch = os.path.dirname(os.getcwd())
for rel in ("kernel.pid", "conn/kernel.json", "conn/evil", "evil"):
    try:
        os.remove(os.path.join(scratch, rel))
    except OSError:
        pass
    try:
        os.symlink("{victim}/secret", os.path.join(scratch, rel))
        print("PLANTED", rel)
    except OSError as exc:
        print("REFUSED", rel, type(exc).__name__)
# what graded code leaves behind, how much it may write, whom it sees
for path in ("/tmp/aifhub-left-{tag}", "/dev/shm/aifhub-left-{tag}", "/var/tmp/aifhub-left-{tag}"):
    try:
        open(path, "w").write("left")
    except OSError as exc:
        print("NOTMP", path, exc.strerror)
try:
    with open("big.bin", "wb") as f:
        for _ in range(100):
            f.write(bytes(1024 * 1024))
    print("WROTE 100 MB")
except OSError as exc:
    print("FULL", exc.strerror)
os.remove("big.bin")
print("SEES", sorted({{os.stat("/proc/" + p).st_uid for p in os.listdir("/proc") if p.isdigit()}}), os.getuid())
"""


def test_an_instructor_cannot_make_root_follow_a_link_in_the_grading_directory(hub, released, grading_victim):
    """#15 item 1: links an instructor plants in course-grading/ are neither chmodded on collect nor
    copied into a learner's feedback; the whole round of grading still works."""
    tag = uuid.uuid4().hex[:8]
    plants = GRADED_PLANTS.format(victim=grading_victim, tag=tag)
    assert submit(hub, "frank", with_extra_cells(solution_notebook(), [plants])).status_code == 201
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.spawn("instructor", COURSE)
    assert r.status_code in (201, 202), r.text
    said = hub.run_in_kernel("instructor", INSTRUCTOR_PLANTS.format(victim=grading_victim))
    planted = {line.split()[1] for line in said.splitlines() if line.startswith("PLANTED")}
    assert planted <= {"gradebook.db-journal", "evil"}, said  # nothing where nbgrader works, no renames
    assert "GRADEBOOK True" in said, said  # formgrader still writes the gradebook

    # collect shares (chmods) the directory again: it used to chmod the link's target
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    jobs = autograde(hub, ["frank"])
    assert jobs["frank"]["state"] == "done" and jobs["frank"]["score"] == 10, jobs
    r = hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback")
    assert r.status_code == 200 and "frank" in r.json()["released_to"], r.text
    untouched(grading_victim)
    course = hub.state_dir / "grading" / COURSE
    assert not os.path.lexists(course / "evil") and not os.path.lexists(course / "gradebook.db-journal")

    graded = nbformat.read(str(course / "autograded" / "frank" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), as_version=4)
    said = "".join(o.get("text", "") for o in graded.cells[-1].get("outputs", []))
    assert said.count("REFUSED") == 4 and "PLANTED" not in said, said  # the kernel's uid cannot reach root's files
    assert "FULL No space left on device" in said, said  # at most scratch_size (64M) in all
    seen = said.split("SEES ")[1].split("\n")[0]
    assert seen.split("] ")[0] == "[" + seen.split("] ")[1], said  # only its own processes
    for folder in ("/tmp", "/dev/shm", "/var/tmp"):  # nothing left on the machine
        assert not os.path.exists(f"{folder}/aifhub-left-{tag}"), folder

    fb = hub.service("GET", f"courses/{COURSE}/assignments/{ASSIGNMENT}/feedback", token=hub.token_for("frank"))
    assert fb.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(fb.content)) as tar:
        names = tar.getnames()
        assert names == [f"{ASSIGNMENT}.html", "timestamp.txt"], names
        assert all(SECRET.encode() not in tar.extractfile(n).read() for n in names)
    hub.stop_server("instructor")


def test_a_learner_hands_in_normally_after_the_refused_uploads(hub, released):
    r = hub.service(
        "POST",
        f"courses/{COURSE}/assignments/{ASSIGNMENT}/submissions",
        token=hub.token_for("frank"),
        data=archive({f"{ASSIGNMENT}.ipynb": solution_notebook(), "data/extra.csv": b"1,2\n"}),
    )
    assert r.status_code == 201, r.text
