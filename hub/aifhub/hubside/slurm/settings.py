"""``aifhub up --sandboxes slurm``: the spawner's settings from the environment (what `make slurm` prints) and
from ``--slurm-config FILE`` (YAML, keys are SlurmSpawner's traits; the file wins)."""

import os

import yaml

# the keys of --slurm-config: SlurmSpawner traits, and two of the hub's
SPAWNER_KEYS = {
    "backend",
    "rest_url",
    "jwt_key_file",
    "slurm_conf",
    "partition",
    "gpu_types",
    "default_time",
    "site_accounts",
    "site_account_template",
    "work_root",
    "job_python",
    "job_host",
    "job_bind",
    "job_output",
    "poll_interval",
    "default_memory_mb",
    "session_reservations",
}
HUB_KEYS = {"hub_connect_url"}


class SlurmConfigError(ValueError):
    """The --slurm-config file is wrong: the message says where and what is expected."""


def load(path):
    """The settings in the YAML file ``path`` (a dict of known keys), or {} for no file."""
    if not path:
        return {}
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise SlurmConfigError(f"--slurm-config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SlurmConfigError(f"--slurm-config {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SlurmConfigError(f"--slurm-config {path}: expected a mapping of settings such as 'rest_url: ...'")
    unknown = sorted(set(data) - SPAWNER_KEYS - HUB_KEYS)
    if unknown:
        raise SlurmConfigError(
            f"--slurm-config {path}: unknown setting(s) {', '.join(unknown)}; known: "
            + ", ".join(sorted(SPAWNER_KEYS | HUB_KEYS))
        )
    return data


def configure(c, path, env=os.environ):
    """Make the hub config ``c`` start sandboxes as Slurm jobs (the service URL and token are set by the caller)."""
    data = load(path)
    c.JupyterHub.spawner_class = "aifhub-slurm"
    for key, value in data.items():
        if key in SPAWNER_KEYS:
            setattr(c.SlurmSpawner, key, value)
    if data.get("hub_connect_url"):
        c.JupyterHub.hub_connect_url = data["hub_connect_url"]
    missing = [
        name
        for name, key, var in [
            ("slurmrestd's URL", "rest_url", "AIFHUB_SLURM_REST_URL"),
            ("the JWT key", "jwt_key_file", "AIFHUB_SLURM_JWT_KEY"),
        ]
        if not data.get(key) and not env.get(var) and data.get("backend", "rest") == "rest"
    ]
    if missing:
        raise SlurmConfigError(
            f'--sandboxes slurm needs {" and ".join(missing)}: run `eval "$(make slurm)"` for the local test '
            "cluster, or give --slurm-config FILE with rest_url and jwt_key_file (docs/slurm.md)"
        )
    from . import address

    address.register()
    return data
