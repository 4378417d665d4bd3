"""One rule finds the sandbox images for `aifhub up` (the hub and the service), `aifhub courses` and `aifhub k8s`:
--images, else $AIFHUB_IMAGES, else sandbox_images/ beside the courses folder, else in the working directory.

A course folder with no sandbox_images/ beside it (a newcomer's own courses, somewhere) works with --images."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hubrunner import RunningHub, copy_courses

from aifhub.catalog.images import images_dir_for

REPO = Path(__file__).resolve().parent.parent
# a course on an image that only the newcomer's images folder has: it loads only where that folder is used
OWN_COURSE = """id: own-course
title: My Own Course
kind: mooc
enrollment: open
instructors: [instructor]
sandbox: {image: my-cpu, cpu: 1, memory: 1G}
allocation: EHPC-AIF-2026-PG01
"""


@pytest.fixture
def newcomer(tmp_path):
    """``courses/`` with no sandbox_images/ beside it, and an images folder elsewhere with one image more."""
    courses = copy_courses(tmp_path / "mine" / "courses")
    (courses / "own-course").mkdir()
    (courses / "own-course" / "course.yaml").write_text(OWN_COURSE)
    images = tmp_path / "elsewhere" / "images"
    shutil.copytree(REPO / "sandbox_images", images, ignore=shutil.ignore_patterns("Dockerfile", "*.txt"))
    (images / "my-cpu").mkdir()
    text = (images / "cpu-base" / "image.yaml").read_text().replace("name: cpu-base", "name: my-cpu")
    (images / "my-cpu" / "image.yaml").write_text(text)
    empty = tmp_path / "cwd"
    empty.mkdir()
    return courses, images, empty


def aifhub(*args, cwd, env=None):
    clean = {k: v for k, v in os.environ.items() if k != "AIFHUB_IMAGES"}
    return subprocess.run(
        [sys.executable, "-m", "aifhub", *args], cwd=cwd, env=clean | (env or {}), capture_output=True, text=True
    )


def test_the_rule(tmp_path, newcomer):
    courses, images, cwd = newcomer
    assert images_dir_for(courses, str(images), env={}, cwd=cwd) == images
    assert images_dir_for(courses, None, env={"AIFHUB_IMAGES": str(images)}, cwd=cwd) == images
    assert images_dir_for(courses, None, env={}, cwd=cwd) == cwd / "sandbox_images"  # nothing beside: the cwd's
    assert images_dir_for(REPO / "courses", None, env={}, cwd=cwd) == REPO / "sandbox_images"  # beside the courses


def test_courses_validate_follows_the_rule(newcomer):
    courses, images, cwd = newcomer
    broken = aifhub("courses", "validate", str(courses / "own-course"), cwd=cwd)
    assert broken.returncode == 1 and "unknown image 'my-cpu'" in broken.stdout, broken.stdout + broken.stderr
    given = aifhub("courses", "validate", str(courses), "--images", str(images), cwd=cwd)
    assert given.returncode == 0 and "ok" in given.stdout and "own-course" in given.stdout, given.stdout + given.stderr
    by_env = aifhub("courses", "validate", str(courses / "own-course"), cwd=cwd, env={"AIFHUB_IMAGES": str(images)})
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr


def test_up_without_images_anywhere_says_what_to_give(newcomer):
    courses, _, cwd = newcomer
    r = aifhub("up", "--courses", str(courses), "--state-dir", str(cwd / "state"), "--port", "1", cwd=cwd)
    assert r.returncode == 2 and "--images" in r.stderr and "sandbox_images" in r.stderr, r.stderr


def test_up_with_images_serves_every_course_of_a_folder_without_them(hub_dir, newcomer):
    courses, images, _ = newcomer
    hub = RunningHub(
        hub_dir / "state", courses, extra_args=["--images", str(images)], log_path=hub_dir / "aifhub-up.log"
    ).start()
    try:
        listed = hub.service("GET", "courses").json()
        ids = {c["id"] for c in listed["courses"]}
        assert {"own-course", "dl-basics", "gpu-fundamentals"} <= ids, listed
        assert not listed.get("broken"), listed["broken"]
    finally:
        hub.stop()
