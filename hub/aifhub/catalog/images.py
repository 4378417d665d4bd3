"""Sandbox image metadata: ``sandbox_images/<name>/image.yaml``."""

from dataclasses import dataclass
from pathlib import Path

import yaml


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
