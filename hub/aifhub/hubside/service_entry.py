"""The aifhub service as both hub configurations declare it: its entry in ``c.JupyterHub.services``, the
roles it and its users need, the spawner's way to it, and the quota notices on the hub's pages.

The embedded default (:mod:`.embedded`) and the z2jh chart's hub (:mod:`.z2jh`) differ only in where the
service listens, how it is started and which spawner they use.
"""

from pathlib import Path

from .notices import QuotaNotices
from .user_watch import NewUserWatch

SERVICE_NAME = "aifhub"
ADMIN_TOKEN_SERVICE = "aifhub-admin"
LINK = f'Your courses and sandboxes: <a href="/services/{SERVICE_NAME}/">aifhub</a>.'


class ConfigError(ValueError):
    """The hub cannot start with these settings; the message says why."""


def service_prefix_url(url):
    """The service's own prefix at ``url`` (where the hub reaches it directly, not through the proxy)."""
    return f"{url}/services/{SERVICE_NAME}/"


def service_entry(url, command, environment, existing=None):
    """The ``c.JupyterHub.services`` entry of the aifhub service at ``url``, started with ``command`` and
    ``environment``. ``existing`` (an entry the chart made from ``hub.services.aifhub``) keeps its own
    command, and its environment is added to."""
    entry = dict(existing or {})
    entry.update(name=SERVICE_NAME, url=url)
    entry.setdefault("command", command)
    entry.setdefault("display", True)
    entry.setdefault("oauth_no_confirm", True)
    entry["environment"] = {**entry.get("environment", {}), **environment}
    return entry


def with_service(services, entry):
    """``services`` with ``entry`` in place of the aifhub service's (or added at the end)."""
    if any(s.get("name") == SERVICE_NAME for s in services):
        return [entry if s.get("name") == SERVICE_NAME else s for s in services]
    return [*services, entry]


def aifhub_roles(existing):
    """Roles the aifhub service and its users need, added to whatever ``hub.loadRoles`` defines."""
    roles = {r["name"]: dict(r) for r in existing}
    user = roles.setdefault("user", {"name": "user", "scopes": ["self"]})
    user["scopes"] = sorted(set(user.get("scopes", ["self"])) | {"self", f"access:services!service={SERVICE_NAME}"})
    roles["aifhub-service"] = {
        "name": "aifhub-service",
        "description": "What the aifhub service needs: users, groups and servers; sharing a learner's server with "
        "the helper the learner accepted, and taking it back (shares, the helper's tokens)",
        "services": [SERVICE_NAME],
        "scopes": [
            "admin:users",
            "admin:groups",
            "admin:servers",
            "list:users",
            "read:users",
            "shares",
            "access:servers",
            "tokens",
        ],
    }
    return list(roles.values())


# What a sandbox's own JupyterHub token may do: besides the server's defaults, call the aifhub service (nbgrader's
# exchange speaks HTTP to it; a pod's course-materials init container fetches the course's files from it)
SANDBOX_TOKEN_SCOPES = ["users:activity!user", "access:servers!server", f"access:services!service={SERVICE_NAME}"]


# The single-user server's extensions of aifhub: guests (a helper the learner let in) lose their open connections
# the moment the learner ends the help (aifhub.sandboxside.guests); the JupyterLab bar's way to the service
# (aifhub.sandboxside.bar)
SANDBOX_ARGS = [
    "--ServerApp.jpserver_extensions=aifhub.sandboxside.guests=True",
    "--ServerApp.jpserver_extensions=aifhub.sandboxside.bar=True",
]
# Where sandboxes find aifhub's prebuilt JupyterLab extension (the bar): a data folder of the package, on
# JUPYTER_PATH
LAB_DATA = str(Path(__file__).resolve().parent.parent / "labdata")


def connect_spawner(spawner_config, url, token):
    """Point a course spawner's config section (``c.LocalSandboxSpawner``, ``c.KubeSandboxSpawner``) at the
    service: admission and offers go to ``url`` with the internal ``token``; its sandboxes' tokens may reach it."""
    spawner_config.service_url = service_prefix_url(url)
    spawner_config.internal_token = token
    spawner_config.server_token_scopes = list(SANDBOX_TOKEN_SCOPES)


def watch_new_users(url, token):
    """Tell the service about every user the hub creates, so that a user deleted and created again gets their
    courses' groups back at once (see :mod:`.user_watch`)."""
    return NewUserWatch.install(service_prefix_url(url), token)


def announcement(url, token, link=LINK, interval=15.0):
    """The hub pages' announcement: ``link`` and, for a learner near a limit, their quota warning."""
    return QuotaNotices(link, service_prefix_url(url), token, interval=interval)
