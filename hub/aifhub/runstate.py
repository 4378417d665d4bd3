"""What ``aifhub up`` keeps between runs: its ports, and the pids of what it started.

Sandboxes outlive a crashed hub. For them to keep working after a restart,
the hub comes back on the same internal ports, and stale processes of the
previous run (the proxy, the service) are stopped before new ones start.
"""

import json
import os
import signal
import socket
import time
from pathlib import Path

PORTS_FILE = "ports.json"
UP_PID_FILE = "aifhub-up.pid"
SERVICE_PID_FILE = "service.pid"
CLI_TOKEN_FILE = Path("secrets") / "cli_token"  # the admin token the hub accepts from this machine's `aifhub` CLI


def _port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def internal_ports(state):
    """Ports of the hub API, the proxy API and the service: the previous run's, else new free ones."""
    path = Path(state) / PORTS_FILE
    try:
        ports = json.loads(path.read_text())
        assert set(ports) == {"hub", "proxy_api", "service"}
    except (OSError, ValueError, AssertionError):
        ports = {"hub": _free_port(), "proxy_api": _free_port(), "service": _free_port()}
    for name in ("hub", "service"):  # the proxy's port is freed by the hub, which stops a stale proxy
        if not _port_free(ports[name]):
            ports[name] = _free_port()
    path.write_text(json.dumps(ports))
    return ports


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_pid(path):
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def running_instance(state):
    """The pid of another ``aifhub up`` on this state directory, if one runs."""
    pid = _read_pid(Path(state) / UP_PID_FILE)
    if pid and pid != os.getpid() and "aifhub" in _cmdline(pid) and " up" in _cmdline(pid):
        return pid
    return None


def claim(state):
    (Path(state) / UP_PID_FILE).write_text(str(os.getpid()))


def write_service_pid(state):
    (Path(state) / SERVICE_PID_FILE).write_text(str(os.getpid()))


def stop_stale_service(state, timeout=10):
    """Stop a service left running by a run that crashed (it holds the service port)."""
    pid = _read_pid(Path(state) / SERVICE_PID_FILE)
    if not pid or "aifhub.service" not in _cmdline(pid):
        return None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and "aifhub.service" in _cmdline(pid):
            time.sleep(0.1)
        if "aifhub.service" not in _cmdline(pid):
            return pid
    return pid
