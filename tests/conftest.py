import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hubrunner import RunningHub, copy_courses  # noqa: E402

AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def hub_dir(request):
    """A folder for one module's hub. Not under pytest's private tmp folder (mode 0700, reset by every
    pytest run): as root, learners' sandboxes run as other uids and must traverse to their work folders."""
    keep = os.environ.get("AIFHUB_TEST_KEEP")
    path = Path(tempfile.mkdtemp(prefix=f"aifhub-{request.module.__name__}-"))
    path.chmod(0o711)
    yield path
    if not keep:
        shutil.rmtree(path, ignore_errors=True)


def start_hub(hub_dir, gpus, prepare_courses=None, extra_args=(), **kw):
    courses = copy_courses(hub_dir / "courses")
    if prepare_courses:
        prepare_courses(courses)
    # the sandbox_images metadata sits next to the courses, as in the repository
    images = hub_dir / "sandbox_images"
    if not images.exists():
        images.symlink_to(Path(__file__).resolve().parent.parent / "sandbox_images")
    return RunningHub(hub_dir / "state", courses, gpus=gpus, extra_args=extra_args, log_path=hub_dir / "aifhub-up.log", **kw).start()
