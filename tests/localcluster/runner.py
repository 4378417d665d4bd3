"""How the test kubelet runs a container: a bubblewrap sandbox built from the pod spec.

The "image" is this machine's Python environment (the interpreter, the virtual environment and
aifhub's sources, read-only) with /usr and /etc of the host; its config (user, environment,
working directory) is what aifhub's sandbox images declare. Each container gets its own PID, IPC
and UTS namespaces, the pod's hostname, only the pod's volumes at their mount paths, the pod's
environment, and runs as the pod's user and groups with no capabilities and no new privileges.

Networking is the pod's address on the host's loopback network (each pod has its own 127.x.y.z
address; a server bound to the wildcard 0.0.0.0 in the pod's spec is bound to that address), except
for pods that a NetworkPolicy cuts off from everything: those get an empty network namespace.
"""

import os
import re
import shutil
import sys
from pathlib import Path

from . import podfs

REPO = Path(__file__).resolve().parents[2]
BWRAP = shutil.which("bwrap")
SETPRIV = shutil.which("setpriv")
IMAGE_CONFIG = {  # what sandbox_images/*/Dockerfile declare
    "user": 1000,
    "group": 100,
    "workdir": "/home/jovyan",
    "env": {"HOME": "/home/jovyan", "SHELL": "/bin/bash", "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"},
    "cmd": ["jupyterhub-singleuser"],
}
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ContainerConfigError(RuntimeError):
    """The container cannot be created as specified (CreateContainerConfigError)."""


def image_path(prefixes=None):
    """Folders that make up the "image": the interpreter's prefixes and aifhub's sources, each as written and
    with links resolved (a checkout reached through a link: ``sys.prefix`` names the link, while the
    environment's scripts name the real path on their first line)."""
    folders = prefixes or (sys.prefix, sys.base_prefix, str(REPO / "hub"))
    return sorted({p for f in folders for p in (os.path.abspath(f), os.path.realpath(f))} - {"/usr"})


def expand(text, env):
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ is a literal $)."""

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


def security(pod_spec, container):
    """(uid, gid, supplementary groups, run as non-root required, capabilities to add)."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser", IMAGE_CONFIG["user"]))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", IMAGE_CONFIG["group"] if uid == IMAGE_CONFIG["user"] else 0))
    groups = [g for g in [pod_sc.get("fsGroup"), *pod_sc.get("supplementalGroups", [])] if g is not None]
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False))
    if non_root and uid == 0:
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    if sc.get("privileged"):
        raise ContainerConfigError("privileged containers are not run by the aifhub test kubelet")
    adds = [c.upper() for c in (sc.get("capabilities") or {}).get("add", [])]
    return int(uid), int(gid), sorted({int(g) for g in groups}), adds


def bwrap_command(pod, container, mounts, env, *, isolated_network, read_only_root=False):
    """The argv that runs ``container`` of ``pod``.

    ``mounts``: list of (host path, mount path, read_only) for the container's volumeMounts, already
    resolved (subPaths included). ``env``: the container's final environment (dict).
    """
    spec = pod["spec"]
    uid, gid, groups, caps = security(spec, container)
    hostname = (spec.get("hostname") or pod["metadata"]["name"])[:63]
    cmd = [
        BWRAP,
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--as-pid-1",
        "--hostname",
        hostname,
    ]
    if isolated_network:
        cmd.append("--unshare-net")
    cmd += [
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--ro-bind",
        "/etc",
        "/etc",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    if not read_only_root:
        cmd += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp"]
    made = {"/", "/usr", "/etc", "/proc", "/dev", "/tmp", "/var/tmp"}

    def parents(path):  # bwrap would make missing parents mode 0700, which the pod's user cannot pass
        out = []
        for parent in reversed(Path(path).parents):
            if str(parent) not in made:
                made.add(str(parent))
                out += ["--perms", "0755", "--dir", str(parent)]
        return out

    cmd += podfs.mountpoint_args([path for _, path, _ in mounts])  # e.g. /usr/local/etc/jupyterhub
    for host, path, ro in mounts:
        cmd += parents(path) + ["--ro-bind" if ro else "--bind", str(host), path]
    for path in image_path():  # after the volumes: a checkout under /tmp stays visible
        cmd += parents(path) + ["--ro-bind", path, path]
    workdir = container.get("workingDir") or IMAGE_CONFIG["workdir"]
    if not any(path == workdir or workdir.startswith(path.rstrip("/") + "/") for _, path, _ in mounts):
        cmd += parents(workdir) + ["--perms", "0755", "--dir", workdir]
    cmd += ["--chdir", workdir, "--clearenv"]
    for name, value in env.items():
        cmd += ["--setenv", name, value]
    if uid == 0:
        cmd += ["--cap-drop", "ALL"] + [a for c in caps for a in ("--cap-add", f"CAP_{c}")]
        drop = []
    else:
        drop = [
            SETPRIV,
            f"--reuid={uid}",
            f"--regid={gid}",
            f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--pdeathsig=SIGKILL",
            "--",
        ]  # the uid change cleared bwrap's --die-with-parent
    command = [expand(c, env) for c in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    if not command:
        command, args = (args, []) if args else (list(IMAGE_CONFIG["cmd"]), [])
    return cmd + drop + command + args
