"""JupyterHub configuration for the embedded default, driven by what ``aifhub up`` passes.

``hub/jupyterhub_config.py`` calls :func:`configure`; every value comes from an
``AIFHUB_*`` environment variable that ``aifhub up`` sets from its flags.
"""

import ipaddress
import logging
import os
import secrets
import shlex
import shutil
import sys
from pathlib import Path

from . import hubdb, loopwatch, turns
from ..catalog.images import images_dir_for
from .service_entry import (
    ADMIN_TOKEN_SERVICE,
    LINK,
    SERVICE_NAME,
    LAB_DATA,
    SANDBOX_ARGS,
    ConfigError,
    aifhub_roles,
    announcement,
    connect_spawner,
    service_entry,
)
from ..runstate import CLI_TOKEN_FILE
from . import hub_logs
from .service_entry import watch_new_users

REPO = Path(__file__).resolve().parents[3]
CLI_SERVICE = "aifhub-cli"  # the admin token of this machine's CLI


def is_loopback(ip):
    if ip in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def read_or_create_secret(path):
    """A random secret kept in ``path`` (mode 0600), created on first use."""
    path = Path(path)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def proxy_command():
    local = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return [str(local)]
    found = shutil.which("configurable-http-proxy")
    if found:
        return [found]
    raise ConfigError(
        "configurable-http-proxy was not found. Install it with `npm install` in the repository "
        "(needs node and npm; `make run` does this for you)."
    )


def settings_from_env(env=os.environ):
    state = Path(env.get("AIFHUB_STATE_DIR", ".aifhub")).resolve()
    courses = Path(env.get("AIFHUB_COURSES", REPO / "courses")).resolve()
    return {
        "state_dir": state,
        "courses": courses,
        "images": images_dir_for(courses, env=env),
        "ip": env.get("AIFHUB_IP", "127.0.0.1"),
        "port": int(env.get("AIFHUB_PORT", "8000")),
        "hub_port": int(env.get("AIFHUB_HUB_PORT", "8081")),
        "proxy_api_port": int(env.get("AIFHUB_PROXY_API_PORT", "8001")),
        "service_port": int(env.get("AIFHUB_SERVICE_PORT", "10101")),
        "gpus": env.get("AIFHUB_GPUS", ""),
        "gpu_kind": env.get("AIFHUB_GPU_KIND", "gpu"),
        "gpu_kinds": env.get("AIFHUB_GPU_KINDS", ""),
        "meter_interval": env.get("AIFHUB_METER_INTERVAL", "60"),
        "demo_password": env.get("AIFHUB_DEMO_PASSWORD", ""),
        "admin_token": env.get("AIFHUB_ADMIN_TOKEN", ""),
        "log_level": env.get("AIFHUB_LOG_LEVEL", "INFO"),
        "demo": env.get("AIFHUB_DEMO", "1") == "1",
        "stop_grace": env.get("AIFHUB_STOP_GRACE", "120"),
        "auth": env.get("AIFHUB_AUTH", "demo"),
        "auth_config": env.get("AIFHUB_AUTH_CONFIG", ""),
        "sandboxes": env.get("AIFHUB_SANDBOXES", "local"),
        "slurm_config": env.get("AIFHUB_SLURM_CONFIG", ""),
    }


def configure(c, env=os.environ):
    """Fill JupyterHub's config object ``c`` for the embedded default."""
    s = settings_from_env(env)
    state = s["state_dir"]
    state.mkdir(parents=True, exist_ok=True)
    isolated = os.geteuid() == 0
    if isolated:
        state.chmod(0o711)  # learners' sandboxes traverse to their own work folder, nothing more

    demo_login = s["auth"] == "demo"
    if demo_login and not s["demo_password"]:
        raise ConfigError("AIFHUB_DEMO_PASSWORD is not set: `aifhub up` sets it (random when you give none).")
    if demo_login and not is_loopback(s["ip"]):
        raise ConfigError(
            f"Refusing to listen on {s['ip']}: the demo login lets anyone in with one shared password, "
            "so it only serves on loopback (127.0.0.1). Log in with --auth oidc or lti13 to serve others."
        )

    internal_token = read_or_create_secret(state / "secrets" / "internal_token")
    service_url = f"http://127.0.0.1:{s['service_port']}"
    bindir = Path(sys.executable).parent

    c.JupyterHub.ip = s["ip"]
    c.JupyterHub.port = s["port"]
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = s["hub_port"]
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.db_kwargs = hubdb.db_kwargs()  # WAL: commits on the hub's loop do not wait for the disk
    turns.install_all()  # a storm of spawn requests, and the routes' sweep, take turns on the hub's loop
    loopwatch.start_with_hub(logger=logging.getLogger("JupyterHub"))  # the loop watched, the heap frozen
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.log_level = s["log_level"]
    c.JupyterHub.logging_config = hub_logs.logging_config(s["log_level"])  # a refusal in one line, not a traceback
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
    c.ConfigurableHTTPProxy.command = proxy_command()
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

    if demo_login:
        c.JupyterHub.authenticator_class = "aifhub.hubside.demo_login.DemoAuthenticator"
        c.DemoAuthenticator.password = s["demo_password"]
        c.Authenticator.allow_all = True
    else:
        from ..auth.embedded import configure_auth

        configure_auth(c, s["auth"], s["auth_config"], f"{service_url}/services/{SERVICE_NAME}/", internal_token, state)

    c.JupyterHub.spawner_class = "aifhub-local"
    c.Spawner.cmd = [str(bindir / "jupyterhub-singleuser")]
    c.Spawner.default_url = "/lab"
    c.Spawner.args = list(SANDBOX_ARGS)  # the sandbox side of aifhub (a helper's access ends at once)
    c.Spawner.environment = {"PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "JUPYTER_PATH": LAB_DATA}
    # A spawn may wait: for its turn to boot (LocalSandboxSpawner.max_starting: the last of a hundred waits
    # minutes) or in the GPU waitlist (hours, told its place). Those waits are aifhub's and say so; each boot
    # has http_timeout once its turn comes. JupyterHub's own timeout is a last resort, and waiting spawns
    # must not count against its limit of spawns at once.
    c.Spawner.start_timeout = 8 * 3600
    c.Spawner.http_timeout = 120
    c.JupyterHub.concurrent_spawn_limit = 1000
    # a sandbox's token may call the aifhub service (nbgrader's exchange there speaks HTTP to it)
    c.Spawner.server_token_scopes = [
        "users:activity!user",
        "access:servers!server",
        f"access:services!service={SERVICE_NAME}",
    ]
    c.LocalSandboxSpawner.work_root = str(state / "work")
    connect_spawner(c.LocalSandboxSpawner, service_url, internal_token)
    if s["sandboxes"] == "slurm":  # each sandbox a Slurm job (docs/slurm.md)
        from .slurm.settings import SlurmConfigError, configure as configure_slurm

        try:
            slurm_settings = configure_slurm(c, s["slurm_config"], env)
        except SlurmConfigError as exc:
            raise ConfigError(str(exc)) from exc
        connect_spawner(c.SlurmSpawner, service_url, internal_token)
        # jobs live on the cluster, not under this hub: a restarted hub adopts them (their ids are in its state)
        c.JupyterHub.cleanup_servers = False
    watch_new_users(service_url, internal_token)  # a user deleted and created again gets their groups back

    service_cmd = [
        sys.executable,
        "-m",
        "aifhub.service",
        f"--state-dir={state}",
        f"--courses={s['courses']}",
        f"--images={s['images']}",
        f"--gpus={s['gpus']}",
        f"--gpu-kind={s['gpu_kind']}",
        f"--gpu-kinds={s['gpu_kinds']}",
        f"--meter-interval={s['meter_interval']}",
        f"--log-level={s['log_level']}",
        f"--stop-grace={s['stop_grace']}",
    ]
    if s["demo"]:
        service_cmd.append("--demo")
    if s["sandboxes"] == "slurm":  # the service keeps Slurm's associations in step (service/slurm_accounts.py)
        service_cmd.append("--sandboxes=slurm")
        if slurm_settings.get("site_account_template"):
            service_cmd.append(f"--SlurmAccounts.site_account_template={slurm_settings['site_account_template']}")
        for user, account in (slurm_settings.get("site_accounts") or {}).items():
            service_cmd.append(f"--SlurmAccounts.site_accounts={user}={account}")
    # JupyterHub's cleanup stops services before sandboxes: the service has them stopped first (service/shutdown.py);
    # with c.JupyterHub.cleanup_servers = False, pass --AifhubService.stop_sandboxes_on_exit=False in AIFHUB_SERVICE_ARGS
    if "stop_sandboxes_on_exit" not in env.get("AIFHUB_SERVICE_ARGS", "") and s["sandboxes"] != "slurm":
        service_cmd.append("--stop-sandboxes-on-exit")
    service_cmd += shlex.split(env.get("AIFHUB_SERVICE_ARGS", ""))  # e.g. --GradingManager.workers=4
    service_env = {
        "AIFHUB_INTERNAL_TOKEN": internal_token,
        "AIFHUB_ISOLATED": "1" if isolated else "0",
        "AIFHUB_AUTH": s["auth"],
        "AIFHUB_AUTH_CONFIG": s["auth_config"],
        # where credentials' status lists and verification pages are reached (set it to the public name behind a proxy)
        "AIFHUB_PUBLIC_URL": env.get("AIFHUB_PUBLIC_URL") or f"http://{s['ip']}:{s['port']}",
    }
    if s["sandboxes"] == "slurm":  # sacctmgr's settings: the cluster and its slurm.conf
        conf = slurm_settings.get("slurm_conf") or env.get("SLURM_CONF", "")
        service_env |= {"SLURM_CONF": conf} if conf else {}
        service_env["AIFHUB_SLURM_CLUSTER"] = env.get("AIFHUB_SLURM_CLUSTER", "")
    if env.get("AIFHUB_DB_URL"):  # PostgreSQL for the ledger and gradebooks; its password stays off command lines
        service_env["AIFHUB_DB_URL"] = env["AIFHUB_DB_URL"]
    c.JupyterHub.services = [service_entry(service_url, service_cmd, service_env)]
    roles = aifhub_roles([])
    # the demo's admin by its role (admin_users beside an admin role is deprecated); a real login names none here
    admin = {"name": "admin", "users": ["admin"] if demo_login else [], "services": []}
    if s["admin_token"]:
        c.JupyterHub.services.append({"name": ADMIN_TOKEN_SERVICE, "api_token": s["admin_token"]})
        admin["services"].append(ADMIN_TOKEN_SERVICE)
    # this machine's own `aifhub` CLI (grading steps, allocation changes) reads it from the state: see cli/common.py
    c.JupyterHub.services.append({"name": CLI_SERVICE, "api_token": read_or_create_secret(state / CLI_TOKEN_FILE)})
    admin["services"].append(CLI_SERVICE)
    roles.append(admin)
    c.JupyterHub.load_roles = roles

    link = LINK
    if not isolated:
        link += (
            " <strong>Warning: this hub does not run as root, so sandboxes are not isolated from each other.</strong>"
        )
    c.JupyterHub.template_vars = {
        "announcement": announcement(
            service_url, internal_token, link, interval=float(env.get("AIFHUB_NOTICES_INTERVAL", "15"))
        ),
    }
    return s
