import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hubrunner import RunningHub, copy_courses  # noqa: E402

AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hub")
    if AS_ROOT:  # learners' sandboxes (other uids) must reach their folders below
        for p in [path, *path.parents]:
            if p == Path("/"):
                break
            p.chmod(p.stat().st_mode | 0o711)
    return path


def start_hub(hub_dir, gpus, prepare_courses=None):
    courses = copy_courses(hub_dir / "courses")
    if prepare_courses:
        prepare_courses(courses)
    # the sandbox_images metadata sits next to the courses, as in the repository
    images = hub_dir / "sandbox_images"
    if not images.exists():
        images.symlink_to(Path(__file__).resolve().parent.parent / "sandbox_images")
    return RunningHub(hub_dir / "state", courses, gpus=gpus, log_path=hub_dir / "aifhub-up.log").start()
