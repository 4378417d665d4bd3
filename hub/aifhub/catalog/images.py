"""Sandbox image metadata: ``sandbox_images/<name>/image.yaml``."""

import os
from dataclasses import dataclass
from pathlib import Path

import yaml


IMAGES_ENV = "AIFHUB_IMAGES"
IMAGES_FOLDER = "sandbox_images"
IMAGES_HELP = (
    "directory of sandbox images, each <name>/image.yaml (default: $AIFHUB_IMAGES, else sandbox_images/ "
    "beside the courses folder, else sandbox_images/ in the working directory)"
)


def images_dir_for(courses_dir, given=None, env=os.environ, cwd=None):
    """Where the sandbox images of ``courses_dir`` are: the one rule of ``aifhub up``, ``aifhub courses`` and
    ``aifhub k8s``, the hub and the service.

    ``given`` (``--images``), else ``$AIFHUB_IMAGES``, else ``sandbox_images/`` beside the courses folder
    when there is one, else ``sandbox_images/`` in the working directory (``cwd``). Always an absolute path."""
    chosen = given or env.get(IMAGES_ENV)
    base = Path(cwd) if cwd else Path.cwd()
    if chosen:
        return (base / chosen).resolve()
    beside = (base / courses_dir).resolve().parent / IMAGES_FOLDER
    return beside if beside.is_dir() else (base / IMAGES_FOLDER).resolve()


@dataclass(frozen=True)
class SandboxImage:
    name: str
    description: str
    repository: str
    tag: str
    gpu: bool

    @property
    def reference(self):
        """``repository:tag``, as a container runtime pulls it."""
        return f"{self.repository}:{self.tag}"


def load_images(images_dir):
    """Read every ``image.yaml`` under ``images_dir``; return ``{name: SandboxImage}``.

    A folder without a readable ``image.yaml`` is skipped: courses that name
    it are then reported as using an unknown image.
    """
    images = {}
    root = Path(images_dir)
    if not root.is_dir():
        return images
    for meta in sorted(root.glob("*/image.yaml")):
        try:
            data = yaml.safe_load(meta.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        name = meta.parent.name
        images[name] = SandboxImage(
            name=name,
            description=str(data.get("description", "")),
            repository=str(data.get("repository", f"aifhub/sandbox-{name}")),
            tag=str(data.get("tag", "latest")),
            gpu=bool(data.get("gpu", False)),
        )
    return images
