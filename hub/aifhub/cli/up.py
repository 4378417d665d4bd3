"""``aifhub up``: run the embedded hub (JupyterHub + proxy + aifhub service) in the foreground."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..catalog.images import IMAGES_HELP, images_dir_for
from ..auth.config import MODES, AuthConfigError, load as load_auth_config
from ..hubside.embedded import REPO, is_loopback
from ..hubside.demo_login import MIN_LENGTH
from ..hubside.service_entry import SERVICE_NAME
from ..gpus.kinds import load_kinds
from ..service.gpu_pool import gpu_inventory
from ..isolation.cgroups import prioritise_hub
from .. import idranges, runstate
from . import preflight
from .common import CLIError

CONFIG_STUB = "from aifhub.hubside.embedded import configure\n\nconfigure(c)  # noqa: F821\n"


def register(sub):
    p = sub.add_parser("up", help="run the hub on this machine (Ctrl-C stops everything it started)")
    p.add_argument("--port", type=int, default=8000, help="port to serve on (default: 8000)")
    p.add_argument(
        "--ip",
        default="127.0.0.1",
        help="address to serve on (default: 127.0.0.1; the demo login allows loopback only)",
    )
    p.add_argument(
        "--auth",
        choices=MODES,
        default="demo",
        help="how people log in: demo (a shared password, loopback only; the default), oidc (MyAccessID or any "
        "OpenID Connect provider) or lti13 (launches from an LMS); see docs/login.md",
    )
    p.add_argument("--auth-config", help="YAML file with the oidc or lti13 settings (see docs/login.md)")
    p.add_argument("--state-dir", default=".aifhub", help="state directory (default: .aifhub)")
    p.add_argument(
        "--courses",
        default=str(REPO / "courses") if (REPO / "courses").is_dir() else "courses",
        help="directory of course folders (default: courses/)",
    )
    p.add_argument(
        "--images",
        help=IMAGES_HELP,
    )
    p.add_argument(
        "--sandboxes",
        choices=("local", "slurm"),
        default="local",
        help="where sandboxes run: local (processes on this machine; the default) or slurm (one Slurm job each, "
        "charged to the course's Slurm account; settings from `make slurm` or --slurm-config; see docs/slurm.md)",
    )
    p.add_argument("--slurm-config", help="YAML file with the Slurm settings of --sandboxes slurm (docs/slurm.md)")
    p.add_argument("--gpus", default="", help="GPUs to use instead of NVML discovery: 'none' or ids such as '0,1'")
    p.add_argument("--gpu-kind", default="gpu", help="GPU kind of the devices given with --gpus (default: gpu)")
    p.add_argument(
        "--gpu-kinds",
        default="",
        help="YAML file with a gpu_kinds: list: GPU kinds and their sharing modes (whole, mig, timeslice, mps); "
        "see docs/gpus.md",
    )
    p.add_argument("--meter-interval", type=float, default=60.0, help="seconds between metering passes (default: 60)")
    p.add_argument("--config", help="JupyterHub config file (default: hub/jupyterhub_config.py)")
    p.add_argument("--log-level", default="INFO", help="log level of the hub and the service (default: INFO)")
    p.set_defaults(func=up)


def config_file(args, state):
    if args.config:
        return Path(args.config).resolve()
    repo_config = REPO / "hub" / "jupyterhub_config.py"
    if repo_config.exists():
        return repo_config
    stub = state / "jupyterhub_config.py"
    stub.write_text(CONFIG_STUB)
    return stub


def listening(port):
    """Whether something accepts connections on ``port`` (a connection alone, which nothing logs)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_until_ready(proc, ports, proxy_token, timeout=120):
    """Wait until the hub serves users: its own API answers and the proxy routes to it and to the service.

    Asked of the hub's and the proxy's own ports, never through the proxy before its routes exist (which the
    proxy would log as errors, one red line per try).
    """
    deadline = time.monotonic() + timeout
    hub_health = f"http://127.0.0.1:{ports['hub']}/hub/health"  # logged at debug level by the hub
    routes_url = f"http://127.0.0.1:{ports['proxy_api']}/api/routes"
    headers = {"Authorization": f"token {proxy_token}"}
    hub_up = service_up = False
    tries = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if not hub_up:
                hub_up = requests.get(hub_health, timeout=2).status_code == 200
            elif not service_up:  # the hub adds the routes once the service it starts answers
                service_up = listening(ports["service"])
            else:
                routes = {r.rstrip("/") or "/" for r in requests.get(routes_url, headers=headers, timeout=2).json()}
                if {"/", f"/services/{SERVICE_NAME}"} <= routes:
                    return True
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.3 if not service_up else min(0.3 * 2**tries, 2))  # the proxy logs each look at its routes
        tries += service_up
    return False


def slurm_settings(args):
    """The --slurm-config file, checked now (a mistake is said before anything starts); its absolute path."""
    if args.sandboxes != "slurm":
        if args.slurm_config:
            raise CLIError("--slurm-config is for --sandboxes slurm", status=2)
        return ""
    from ..hubside.slurm.settings import SlurmConfigError, configure

    class Section(dict):
        def __getattr__(self, name):
            return self.setdefault(name, Section())

    path = str(Path(args.slurm_config).resolve()) if args.slurm_config else ""
    try:
        configure(Section(), path)
    except SlurmConfigError as exc:
        raise CLIError(str(exc), status=2)
    return path


def up(args):
    if args.meter_interval <= 0:
        raise CLIError("--meter-interval must be a positive number of seconds", status=2)
    if args.auth == "demo" and not is_loopback(args.ip):
        raise CLIError(
            f"refusing to serve on {args.ip}: the demo login lets anyone in with one shared password, so it "
            "serves on loopback only. Log in with --auth oidc or --auth lti13 (see docs/login.md) to serve others.",
            status=2,
        )
    auth_config = ""
    if args.auth != "demo":
        if not args.auth_config:
            raise CLIError(
                f"--auth {args.auth} needs --auth-config FILE with its settings (see docs/login.md)", status=2
            )
        auth_config = str(Path(args.auth_config).resolve())
        try:
            load_auth_config(auth_config, args.auth)
        except AuthConfigError as exc:
            raise CLIError(str(exc), status=2)
    elif args.auth_config:
        raise CLIError("--auth-config is for --auth oidc or lti13; the demo login has no settings", status=2)
    slurm_config = slurm_settings(args)
    try:
        kinds = load_kinds(args.gpu_kinds) if args.gpu_kinds else None
        inventory = [] if args.sandboxes == "slurm" else gpu_inventory(args.gpus or None, args.gpu_kind, kinds)
    except ValueError as exc:
        raise CLIError(str(exc), status=2)
    if inventory is None:
        raise CLIError(
            "--gpus kubernetes is for the Kubernetes deployment (aifhub k8s render); aifhub up hands out "
            "this machine's devices: give 'none' or device ids such as 0,1",
            status=2,
        )
    admin_token = os.environ.get("AIFHUB_ADMIN_TOKEN", "")
    if admin_token and len(admin_token) < 8:
        raise CLIError(
            "AIFHUB_ADMIN_TOKEN must be at least 8 characters long (JupyterHub refuses shorter tokens)", status=2
        )
    if 0 < len(os.environ.get("AIFHUB_DEMO_PASSWORD", "")) < MIN_LENGTH:
        raise CLIError(f"AIFHUB_DEMO_PASSWORD must be at least {MIN_LENGTH} characters long", status=2)
    courses = Path(args.courses).resolve()
    if not courses.is_dir():
        raise CLIError(f"--courses {args.courses}: no such directory", status=2)
    images = images_dir_for(courses, args.images)
    if not images.is_dir():
        raise CLIError(
            f"no sandbox images at {images}: give --images DIR (a folder of <image>/image.yaml), or put "
            "sandbox_images/ beside the courses folder",
            status=2,
        )

    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    os.umask(0o077)  # the hub's database, secrets and logs stay private
    other = runstate.running_instance(state)
    if other:
        raise CLIError(f"another aifhub (pid {other}) is running with the state directory {state}; stop it first")
    found = preflight.problems(args.ip, args.port, state)
    if found:
        raise CLIError("cannot start:\n  - " + "\n  - ".join(found), status=2)
    try:  # the uid and gid ranges, machine-wide: two installations never share them (see aifhub.idranges)
        locks = idranges.RangeLocks(state, idranges.configured(os.environ.get("AIFHUB_SERVICE_ARGS", ""))).claim()
    except (ValueError, idranges.RangeClash) as exc:
        raise CLIError(f"cannot start: {exc}", status=2)
    runstate.claim(state)
    stale = runstate.stop_stale_service(state)
    if stale:
        print(f"Stopped the aifhub service (pid {stale}) left running by a previous run.", flush=True)
    ports = runstate.internal_ports(state)
    password = os.environ.get("AIFHUB_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    url = f"http://{args.ip}:{args.port}/"
    env = dict(os.environ) | {
        "AIFHUB_STATE_DIR": str(state),
        "AIFHUB_COURSES": str(courses),
        "AIFHUB_IMAGES": str(images),  # resolved here, once: the hub and the service run elsewhere (cwd: the state)
        "AIFHUB_IP": args.ip,
        "AIFHUB_PORT": str(args.port),
        "AIFHUB_HUB_PORT": str(ports["hub"]),
        "AIFHUB_PROXY_API_PORT": str(ports["proxy_api"]),
        "AIFHUB_SERVICE_PORT": str(ports["service"]),
        # empty: the service discovers GPUs with NVML; with Slurm, the cluster places them (no local pool)
        "AIFHUB_GPUS": "kubernetes" if args.sandboxes == "slurm" else args.gpus,
        "AIFHUB_SANDBOXES": args.sandboxes,
        "AIFHUB_SLURM_CONFIG": slurm_config,
        "AIFHUB_GPU_KIND": args.gpu_kind,
        "AIFHUB_GPU_KINDS": str(Path(args.gpu_kinds).resolve()) if args.gpu_kinds else "",
        "AIFHUB_METER_INTERVAL": str(args.meter_interval),
        "AIFHUB_DEMO_PASSWORD": password,
        "AIFHUB_AUTH": args.auth,
        "AIFHUB_AUTH_CONFIG": auth_config,
        "AIFHUB_LOG_LEVEL": args.log_level.upper(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # the proxy's API token, so that we can see when its routes are in place (the hub reads it from here)
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(32),
    }
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(config_file(args, state))]
    prioritise_hub()  # the hub, proxy and service (started from here) answer quickly while sandboxes boot
    # Its own session: Ctrl-C reaches us alone and the hub gets one signal, which it needs to stop in order
    # (JupyterHub starts a second cleanup on a second signal). No terminal input: nothing the hub starts,
    # sandboxes included, reads what is typed here.
    # the hub holds the range locks too: they last as long as it runs, even should this process be killed
    proc = subprocess.Popen(
        cmd, cwd=state, env=env, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=locks.fds()
    )

    def forward(signum, _frame):
        proc.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        announce(
            proc,
            url,
            password if args.auth == "demo" else None,
            inventory,
            state,
            ports,
            env["CONFIGPROXY_AUTH_TOKEN"],
            args.auth,
            args.sandboxes,
        )
    except BaseException:  # never leave the hub (and its proxy, service and sandboxes) behind without us
        proc.terminate()
        proc.wait(60)
        raise
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def announce(proc, url, password, inventory, state, ports, proxy_token, auth="demo", sandboxes="local"):
    """Print where the hub is and how to log in, once it answers."""
    if wait_until_ready(proc, ports, proxy_token):
        if password is None:
            login = {
                "oidc": "  login: OpenID Connect (see --auth-config)\n",
                "lti13": f"  login: LTI 1.3 launches; tool settings for the LMS: {url}hub/lti13/config\n",
            }[auth]
        else:
            login = (
                f"  demo login: any user name, password {password}\n"
                "  try: learner1 (on the GPU workshop's roster), any name (open MOOC), instructor, admin\n"
            )
        gpus = ", ".join(f"{d.id} ({d.kind})" for d in inventory) or "none (CPU-only courses)"
        if sandboxes == "slurm":
            gpus = "placed by Slurm (each sandbox is a Slurm job charged to its course's account)"
        isolation = (
            "each learner's sandbox runs under its own uid"
            if os.geteuid() == 0
            else "NOT isolated: run as root to give each learner their own uid"
        )
        if sandboxes == "slurm":
            isolation = "Slurm jobs, each as its learner's account on the cluster"
        limits, warnings = preflight.limits_summary(inventory)
        print(
            f"\naifhub is running at {url}\n"
            f"{login}"
            f"  GPUs: {gpus}\n"
            f"  sandboxes: {isolation}\n"
            + "".join(f"  {line}\n" for line in limits)
            + "".join(f"  WARNING: {w}\n" for w in warnings)
            + f"  state: {state}\n"
            "Press Ctrl-C to stop the hub, the proxy, the service and every sandbox.\n",
            flush=True,
        )
