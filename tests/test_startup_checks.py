"""`aifhub up` names the problems a new user can miss before it starts anything: a checkout or a state
folder that learners' uids cannot reach (a 0700 home folder, as root), a port in use."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import AS_ROOT
from hubrunner import REPO

from aifhub.cli import preflight
from aifhub.isolation.reach import PROBE_UID, blocked, sandbox_obstacles


def up(*args, python=sys.executable, timeout=60):
    return subprocess.run(
        [python, "-m", "aifhub", "up", "--gpus", "none", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=dict(os.environ, AIFHUB_DEMO_PASSWORD="x" * 12),
    )


@pytest.fixture
def closed_home():
    """A folder like a 0700 home: root's, closed to everyone else."""
    path = Path(tempfile.mkdtemp(prefix="aifhub-home-"))
    path.chmod(0o700)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.skipif(not AS_ROOT, reason="the uid checks apply when sandboxes run as learners' uids (root)")
def test_a_checkout_in_a_0700_home_is_refused_at_start_with_what_to_do(closed_home):
    venv = closed_home / "aifhub" / ".venv"
    venv.parent.mkdir()
    venv.symlink_to(REPO / ".venv")  # the same environment, reached through a folder learners cannot enter
    out = up("--port", str(free_port()), "--state-dir", str(closed_home / "state"), python=str(venv / "bin" / "python"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"cannot enter {closed_home} (mode 0700, root's)" in out.stderr, out.stderr
    assert f"the single-user server {venv}/bin/jupyterhub-singleuser" in out.stderr
    assert "every spawn would fail with 'Permission denied'" in out.stderr and f"chmod o+x {closed_home}" in out.stderr
    assert "/opt/aifhub" in out.stderr
    assert "aifhub is running" not in out.stdout


@pytest.mark.skipif(not AS_ROOT, reason="the namespace checks apply when sandboxes run as learners' uids (root)")
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is needed: apt-get install bubblewrap")
def test_an_environment_a_sandbox_namespace_hides_is_refused_at_start():
    """Permission bits that let everyone through, but a folder each sandbox gets a private copy of (here
    /run/lock): the environment is not there inside the namespace. The start-up probe runs this Python
    there, as a learner's uid, and stops `aifhub up` saying so."""
    hidden = Path(tempfile.mkdtemp(prefix="aifhub-hidden-", dir="/run/lock"))
    state = Path(tempfile.mkdtemp(prefix="aifhub-state-"))
    try:
        hidden.chmod(0o755)
        state.chmod(0o711)
        venv = hidden / ".venv"
        venv.symlink_to(REPO / ".venv")
        out = up("--port", str(free_port()), "--state-dir", str(state / "state"), python=str(venv / "bin" / "python"))
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"Learners' sandboxes cannot run {venv}/bin/python from inside their namespace" in out.stderr, out.stderr
        assert "No such file or directory" in out.stderr and "/opt/aifhub" in out.stderr, out.stderr
        assert "Graded kernels cannot run" not in out.stderr, out.stderr  # the machine stays visible to them
        assert "aifhub is running" not in out.stdout
    finally:
        subprocess.run(["rm", "-rf", str(hidden), str(state)], check=False)


def test_the_environment_runs_in_both_namespaces_from_this_checkout():
    """The probe passes for this checkout (wherever it is cloned: /var/tmp/x, /srv/x, /opt/x)."""
    if not AS_ROOT:
        pytest.skip("the namespace checks apply as root")
    state = Path(tempfile.mkdtemp(prefix="aifhub-state-"))
    try:
        state.chmod(0o711)
        assert preflight.namespace_problems(state / "state") == []
    finally:
        subprocess.run(["rm", "-rf", str(state)], check=False)


@pytest.mark.skipif(not AS_ROOT, reason="the uid checks apply when sandboxes run as learners' uids (root)")
def test_a_state_folder_learners_cannot_reach_is_refused_at_start(closed_home):
    out = up("--port", str(free_port()), "--state-dir", str(closed_home / "state"))
    assert out.returncode == 2
    assert f"the learners' work folders in {closed_home}/state/work" in out.stderr, out.stderr
    assert not (closed_home / "state" / "jupyterhub.sqlite").exists()  # nothing was started


def test_a_port_in_use_is_named_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = Path(tempfile.mkdtemp(prefix="aifhub-state-"))
        state.chmod(0o711)
        out = up("--port", str(port), "--state-dir", str(state / "state"))
    subprocess.run(["rm", "-rf", str(state)], check=False)
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in out.stderr and "--port" in out.stderr, out.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def open_dir():
    path = Path(tempfile.mkdtemp(prefix="aifhub-reach-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.parametrize(
    "mode, needed, through",
    [
        (0o700, "pass", False),
        (0o711, "pass", True),
        (0o711, "enter", False),  # passing through is not listing
        (0o755, "enter", True),
        (0o750, "run", False),
        (0o755, "run", True),
    ],
)
def test_what_a_learner_uid_gets_through(open_dir, mode, needed, through):
    target = open_dir / "target"
    target.mkdir()
    target.chmod(mode)
    assert (blocked(target, needed, uid=PROBE_UID) is None) == through


def test_the_obstacles_of_a_sandbox_are_found_through_links(open_dir):
    closed = open_dir / "closed"
    closed.mkdir(mode=0o700)
    (closed / "bin").mkdir()
    script = closed / "bin" / "tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    link = open_dir / "link"
    link.symlink_to(script)
    found = sandbox_obstacles([str(link)], open_dir, uid=PROBE_UID)
    assert found and found[0][1].path == str(closed), found
