"""What the hub pod runs on top of the z2jh chart's configuration (``hub.extraConfig``).

The chart has already turned ``hub.services`` into ``c.JupyterHub.services`` and
``hub.config`` into traitlets config; this wires the aifhub service's address,
secrets and roles, and points the course spawner at the service.
"""

import json
import logging
import os
import sys

from .service_entry import (
    SERVICE_NAME,
    ConfigError,
    aifhub_roles,
    announcement,
    connect_spawner,
    service_entry,
    with_service,
)
from .service_entry import watch_new_users
from . import loopwatch, turns
from ..deploy import COURSES_DIR, IMAGES_DIR, SERVICE_PORT, STATE_DIR
from ..kube.grading_job import COURSES_SUBDIR, GRADING_MOUNT, JOBS_SUBDIR


def service_address(env):
    """``http://<pod ip>:<port>``: the service binds the hub pod's own IP, where the proxy reaches it."""
    ip = env.get("POD_IP")
    if not ip:
        raise ConfigError(
            "POD_IP is not set: the hub pod's env needs POD_IP from status.podIP (hub.extraEnv, see k8s/README.md)."
        )
    return f"http://{ip}:{int(env.get('AIFHUB_SERVICE_PORT', SERVICE_PORT))}"


def service_command(env):
    """The aifhub service process: GPUs placed by Kubernetes, state and ledger from the hub pod's env."""
    cmd = [
        sys.executable,
        "-m",
        "aifhub.service",
        "--gpus=kubernetes",
        f"--state-dir={env.get('AIFHUB_STATE_DIR', STATE_DIR)}",
        f"--courses={env.get('AIFHUB_COURSES', COURSES_DIR)}",
        f"--images={env.get('AIFHUB_IMAGES', IMAGES_DIR)}",
        f"--meter-interval={env.get('AIFHUB_METER_INTERVAL', '60')}",
    ]
    if env.get("AIFHUB_STOP_GRACE"):
        cmd.append(f"--stop-grace={env['AIFHUB_STOP_GRACE']}")
    if env.get("AIFHUB_DB_URL"):
        cmd.append(f"--db-url={env['AIFHUB_DB_URL']}")
    # graded notebooks run as Kubernetes Jobs; courses' directories and job folders live on the grading volume
    volume = env.get("AIFHUB_GRADING_VOLUME", GRADING_MOUNT)
    cmd += [
        "--GradingManager.backend=kubernetes",
        f"--GradingManager.kube_volume_root={volume}",
        f"--GradingManager.grading_dir={volume}/{COURSES_SUBDIR}",
        f"--GradingManager.scratch_dir={volume}/{JOBS_SUBDIR}",
    ]
    return cmd


def configure_z2jh(c, env=os.environ):
    """Fill ``c`` (JupyterHub's config, already filled by the chart) for aifhub."""
    token = env.get("AIFHUB_INTERNAL_TOKEN", "")
    if not token:
        raise ConfigError("AIFHUB_INTERNAL_TOKEN is not set: create the aifhub-secrets Secret (k8s/README.md).")
    url = service_address(env)
    turns.install_all()  # a storm of spawn requests, and the routes' sweep, take turns on the hub's loop
    loopwatch.start_with_hub(logger=logging.getLogger("JupyterHub"))  # the loop watched, the heap frozen
    services = list(c.JupyterHub.services) if "services" in c.JupyterHub else []
    chart_entry = next((s for s in services if s.get("name") == SERVICE_NAME), None)  # hub.services.aifhub
    service_env = {"AIFHUB_INTERNAL_TOKEN": token, "AIFHUB_ISOLATED": "1"}
    if env.get("PGPASSWORD"):  # the chart exports hub.db.password; the ledger uses the same PostgreSQL role
        service_env["PGPASSWORD"] = env["PGPASSWORD"]
    # grading Jobs and placeholders use the sandboxes' GPU pools and registry (KubeSettings.gpu_pools, registry)
    if "gpu_pools" in c.KubeSandboxSpawner:
        service_env["AIFHUB_GPU_POOLS"] = json.dumps(c.KubeSandboxSpawner.gpu_pools)
    if "registry" in c.KubeSandboxSpawner:
        service_env["AIFHUB_REGISTRY"] = c.KubeSandboxSpawner.registry
    # hub.services.aifhub.command, when the chart's values set one, overrides the default command
    c.JupyterHub.services = with_service(services, service_entry(url, service_command(env), service_env, chart_entry))

    c.JupyterHub.spawner_class = "aifhub-kube"
    connect_spawner(c.KubeSandboxSpawner, url, token)  # its sandboxes' tokens may reach the service too
    watch_new_users(url, token)  # a user deleted and created again gets their groups back
    # nbgrader's exchange in sandbox pods talks to the service through the hub's Service (a stable name)
    exchange_url = (
        env.get("AIFHUB_EXCHANGE_URL")
        or f"http://hub:{int(env.get('AIFHUB_SERVICE_PORT', SERVICE_PORT))}/services/{SERVICE_NAME}/"
    )
    environment = dict(c.KubeSandboxSpawner.environment) if "environment" in c.KubeSandboxSpawner else {}
    c.KubeSandboxSpawner.environment = {**environment, "AIFHUB_EXCHANGE_URL": exchange_url}
    c.JupyterHub.load_roles = aifhub_roles(c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else [])
    c.JupyterHub.template_vars = {
        **(c.JupyterHub.template_vars if "template_vars" in c.JupyterHub else {}),
        "announcement": announcement(url, token),
    }
    return url
