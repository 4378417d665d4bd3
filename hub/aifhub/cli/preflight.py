"""What ``aifhub up`` checks before it starts the hub: problems that would otherwise show up later,
one failed spawn at a time, under another name.

:func:`problems` returns what stops the start (each says what to do); :func:`limits_summary` says
which of the sandboxes' hard limits this machine enforces, for the banner.
"""

import os
import socket
import sys
from pathlib import Path

from ..isolation import namespace as confine
from ..isolation.cgroups import CgroupError, Cgroups
from ..isolation.reach import sandbox_obstacles


def singleuser_command():
    return [str(Path(sys.executable).parent / "jupyterhub-singleuser")]


def port_in_use(ip, port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return True
    return False


def own_proxy_running(state):
    """The proxy of a previous run on this state (the hub takes it over when it starts again)."""
    try:
        pid = int((Path(state) / "proxy.pid").read_text().strip())
        return "configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return False


def problems(ip, port, state, as_root=None):
    """What would make the hub fail to start, or every spawn fail: ``[message]``."""
    as_root = os.geteuid() == 0 if as_root is None else as_root
    found = []
    if port_in_use(ip, port) and not own_proxy_running(state):
        found.append(
            f"port {port} on {ip} is in use (another aifhub or JupyterHub?): stop it, or pass --port with a free port"
        )
    if as_root:
        found += [b.message(what) for what, b in sandbox_obstacles(singleuser_command(), Path(state) / "work")]
    return found


def limits_summary(inventory, as_root=None, device_dir="/dev"):
    """``(lines for the banner, warnings)``: which hard limits the sandboxes get here."""
    as_root = os.geteuid() == 0 if as_root is None else as_root
    if not as_root:
        return [], []
    lines, warnings = [], []
    try:
        groups = Cgroups.detect()
        lines.append(f"limits: memory, CPU and processes per sandbox ({groups.describe()})")
    except CgroupError as exc:
        warnings.append(f"memory, CPU and process limits are NOT enforced: {exc}")
    if confine.bwrap_path() and confine.setpriv_path():
        lines.append("namespaces: each sandbox sees only its own GPUs' device nodes, processes and /tmp (bubblewrap)")
    else:
        warnings.append(
            "bubblewrap (bwrap) or setpriv is missing: GPU courses cannot start, and CPU sandboxes share "
            "/dev, /proc and /tmp. Install them: apt-get install bubblewrap util-linux"
        )
    for device in inventory:
        node = Path(device_dir) / f"nvidia{device.node_minor}"
        if not node.exists():
            warnings.append(
                f"GPU {device.id} has no device node {node}: a sandbox given it sees no GPU "
                "(is the NVIDIA driver loaded?)"
            )
    return lines, warnings
