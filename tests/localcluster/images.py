"""What stands for the zero-to-jupyterhub chart's images in the test kubelet.

The test kubelet's "image" is this machine's environment (:mod:`.runner`). For the chart's own images, each is
mapped to the same program from this environment, laid out where the image has it:

- aifhub's hub image (``*/aifhub/hub``, built FROM the chart's hub image): this environment's ``jupyterhub`` (the
  venv is on PATH), with the example courses and ``sandbox_images/`` at ``/srv/aifhub/`` and the working directory
  ``/srv/jupyterhub``, as ``sandbox_images/hub/Dockerfile`` lays them out. The chart's ``jupyterhub_config.py``,
  ``z2jh.py`` and values come from the pod's ConfigMap and Secret volumes, as in a cluster.
- ``configurable-http-proxy``: the proxy of the checkout's ``node_modules`` (what ``make setup`` installs) on PATH.
- ``kube-scheduler`` (the user scheduler): the kube-scheduler built with the control plane, at the image's
  ``/usr/local/bin/kube-scheduler``.
- ``pause``: a process that sleeps until it is signalled, as ``/pause`` does.

Anything else runs as :data:`runner.IMAGE_CONFIG` says (aifhub's sandbox images).
"""

import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from .runner import REPO

PAUSE = (
    "import signal, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    "while True: signal.pause()\n"
)


def _name(image):
    """The image's repository path without registry host and tag: ``quay.io/a/b:1`` -> ``a/b``."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref[: ref.rfind(":")]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


@lru_cache(maxsize=1)
def _kube_scheduler():
    from .controlplane import binaries

    return str(binaries() / "kube-scheduler")


@lru_cache(maxsize=1)
def _image_courses():
    """The example courses as the hub image holds them (``COPY courses``: the checkout's files, folders 0755 and
    files 0644). Not the checkout itself: a hub of the tests that ran as root on it has made each course's
    ``source/`` private to root (``catalog_watch.protect_sources``), which the chart's hub (uid 1000) cannot read."""
    copy = Path(tempfile.mkdtemp(prefix="aifhub-hub-image-")) / "courses"
    shutil.copytree(REPO / "courses", copy, symlinks=True)
    for folder, dirs, files in os.walk(copy):
        os.chmod(folder, 0o755)
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                os.chmod(os.path.join(folder, name), 0o644)
    os.chmod(copy.parent, 0o755)
    return str(copy)


def stand_in(image):
    """{"path": folders put first on PATH, "mounts": [(host, path, read only)], "cmd": default command,
    "workdir": default working directory} for ``image``; empty for an image of aifhub's sandboxes."""
    name = _name(image)
    if name.endswith("aifhub/hub"):
        return {
            "mounts": [
                (_image_courses(), "/srv/aifhub/courses", True),
                (str(REPO / "sandbox_images"), "/srv/aifhub/sandbox_images", True),
            ],
            "workdir": "/srv/jupyterhub",
            "cmd": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"],
        }
    if name.endswith("configurable-http-proxy"):
        modules = REPO / "node_modules"
        return {"path": [str(modules / ".bin")], "mounts": [(str(modules), str(modules), True)]}
    if name.endswith("kube-scheduler"):
        return {"mounts": [(_kube_scheduler(), "/usr/local/bin/kube-scheduler", True)]}
    if name.endswith("pause"):
        return {"cmd": [sys.executable, "-c", PAUSE], "workdir": "/"}
    return {}


def container_for(container):
    """The container with its image's default command and working directory filled in (as the runtime does)."""
    conf = stand_in(container["image"])
    out = dict(container)
    if "cmd" in conf and not out.get("command") and not out.get("args"):
        out["command"] = conf["cmd"]
    if "workdir" in conf and not out.get("workingDir"):
        out["workingDir"] = conf["workdir"]
    return out


def mounts(image):
    return [m for m in stand_in(image).get("mounts", []) if Path(m[0]).exists()]


def path(image, current):
    return ":".join([*stand_in(image).get("path", []), current])
