"""Helpers of the `slurm` tests: the local Slurm (tests/localslurm), learners' site accounts, a hub on it."""

import json
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

from hubrunner import REPO, RunningHub, _offset

SITE_PREFIX = "aifl"  # site accounts of the tests' learners: aifl<uid>


def learner_first_uid():
    """The first uid the service of this worker's test hubs hands to learners (hubrunner.worker_id_ranges)."""
    return _offset() + 200000


class SiteAccounts:
    """Unix accounts for the uids the test hubs hand to learners (as a site's directory would have them): what
    Slurm runs jobs as and names in its accounting. Made with useradd, removed with userdel at the end."""

    def __init__(self, homes, first_uid, count=12):
        self.homes = Path(homes)
        self.uids = range(first_uid, first_uid + count)
        self.made = []

    def create(self):
        self.homes.mkdir(mode=0o755, parents=True, exist_ok=True)
        for uid in self.uids:
            name = f"{SITE_PREFIX}{uid}"
            try:
                found = pwd.getpwuid(uid)
            except KeyError:
                found = None
            if found is not None and found.pw_name != name:
                raise RuntimeError(f"uid {uid} already belongs to {found.pw_name}: pick another AIFHUB_TEST_ID_SLOT")
            home = self.homes / name
            home.mkdir(mode=0o700, exist_ok=True)
            os.chown(home, uid, 65534)
            if found is None:
                subprocess.run(
                    ["useradd", "-M", "-N", "-g", "65534", "-u", str(uid), "-d", str(home), "-s", "/bin/sh", name],
                    check=True,
                    capture_output=True,
                )
                self.made.append(name)
            else:
                subprocess.run(["usermod", "-d", str(home), name], check=True, capture_output=True)
                self.made.append(name)  # a leftover of an earlier run: ours, removed at the end
        return self

    def name(self, uid):
        return f"{SITE_PREFIX}{uid}"

    def remove(self):
        for name in self.made:
            subprocess.run(["userdel", name], capture_output=True)


class Traversable:
    """Let every account traverse (not list) the folders above ``paths``: jobs run as learners and start the
    hub's Python and aifhub from this checkout (on a real cluster, a shared software folder). Modes are put back
    at the end."""

    def __init__(self, paths):
        self.paths = [Path(p).resolve() for p in paths]
        self.changed = {}

    def open(self):
        for path in self.paths:
            for folder in [path, *path.parents]:
                mode = folder.stat().st_mode
                if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH and folder not in self.changed:
                    self.changed[folder] = stat.S_IMODE(mode)
                    os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)
        return self

    def close(self):
        for folder, mode in self.changed.items():
            os.chmod(folder, mode)


def readable_copy(src, dest):
    """A copy of ``src`` that every account can read (course materials are read by the learner's job)."""
    subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)
    os.chmod(dest, 0o755)
    return dest


def associate(slurm, allocation, course, users):
    """The association tree that `aifhub slurm sync` makes: allocation -> course -> users."""
    slurm.run("sacctmgr", "-i", "add", "account", allocation, f"cluster={slurm.cluster}", check=False)
    slurm.run("sacctmgr", "-i", "add", "account", course, f"parent={allocation}", check=False)
    for user in users:
        slurm.run("sacctmgr", "-i", "add", "user", user, f"account={course}", check=False)


def wait_for(predicate, timeout=30, interval=0.3, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout}s")


def code_paths():
    import sys

    return [REPO, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]


ALLOCATION = "ehpc-aif-2026-pg01"


def start_slurm_hub(slurm, hub_dir, associations=True):
    """`aifhub up --sandboxes slurm --slurm-config FILE` on the local Slurm, with the example courses (readable by
    learners' jobs); ``associations``: every site account may charge both example courses."""
    courses = readable_copy(REPO / "courses", hub_dir / "courses")
    (hub_dir / "sandbox_images").symlink_to(REPO / "sandbox_images")
    jobs = hub_dir / "jobs"
    jobs.mkdir()
    jobs.chmod(0o1777)
    config = hub_dir / "slurm.yaml"
    config.write_text(
        json.dumps({"job_host": "127.0.0.1", "job_bind": "127.0.0.1", "job_output": str(jobs / "%j.out")})
    )
    if associations:
        names = [slurm.accounts.name(uid) for uid in slurm.accounts.uids]
        for course in ("dl-basics", "gpu-fundamentals"):
            associate(slurm, ALLOCATION, course, names)
    hub = RunningHub(
        hub_dir / "state",
        courses,
        extra_args=["--sandboxes", "slurm", "--slurm-config", str(config)],
        log_path=hub_dir / "aifhub-up.log",
        # sacct read every 2 s (the service settles ended jobs' charges from it; 30 s by default); with the
        # associations made here, the service leaves them alone (they are the site's, as the tests set them)
        env=slurm.settings()
        | {"AIFHUB_SERVICE_ARGS": f"--SlurmUsage.interval=2 --SlurmAccounts.keep_in_step={not associations}"},
    ).start()
    hub.slurm, hub.jobs = slurm, jobs
    return hub


def squeue(slurm, *fields):
    out = slurm.run("squeue", "-h", "-a", "-o", "|".join(fields)).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def job_log(hub):
    return "\n".join(p.read_text(errors="replace") for p in sorted(Path(hub.jobs).glob("*.out")))
