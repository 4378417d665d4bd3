"""Build KubeSpawner's own pod manifest without a cluster.

KubeSpawner's constructor loads a kubeconfig and its client needs a running
event loop; a kubeconfig naming an unreachable server is enough, since
building a manifest never calls the API.
"""

import os
import tempfile
from contextlib import contextmanager
from types import SimpleNamespace

DUMMY_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: %(namespace)s}}]
current-context: offline
"""


def write_dummy_kubeconfig(path, namespace="aifhub"):
    with open(path, "w") as f:
        f.write(DUMMY_KUBECONFIG % {"namespace": namespace})
    return path


@contextmanager
def offline_kubeconfig(namespace="aifhub"):
    """Point ``$KUBECONFIG`` at a cluster that does not exist, for the duration."""
    from kubernetes_asyncio.config import kube_config  # reads $KUBECONFIG once, at import

    with tempfile.TemporaryDirectory(prefix="aifhub-kube-") as tmp:
        path = write_dummy_kubeconfig(os.path.join(tmp, "kubeconfig"), namespace)
        old_env, old_default = os.environ.get("KUBECONFIG"), kube_config.KUBE_CONFIG_DEFAULT_LOCATION
        os.environ["KUBECONFIG"] = kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path
        try:
            yield path
        finally:
            kube_config.KUBE_CONFIG_DEFAULT_LOCATION = old_default
            if old_env is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = old_env


def mock_user(name, uid=1):
    return SimpleNamespace(name=name, id=uid, url=f"/user/{name}/", groups=[])


def make_spawner(user, config=None, **traits):
    """A KubeSandboxSpawner for ``user`` (a name) outside a hub; call inside a running event loop."""
    from ..hubside.kube import KubeSandboxSpawner

    return KubeSandboxSpawner(_mock=True, user=mock_user(user), config=config, **traits)


async def serialize(obj):
    """A kubernetes client object as the JSON-ready dict the API server receives."""
    from kubernetes_asyncio.client import ApiClient

    async with ApiClient() as api:
        return api.sanitize_for_serialization(obj)


async def render_pod(spawner, course, role="learner"):
    """The pod manifest (a dict) ``spawner`` creates for a course summary (and the user's role in it)."""
    await spawner.configure_for_course(course, role)
    return await serialize(await spawner.get_pod_manifest())


async def render_pvc(spawner):
    """The per-course PersistentVolumeClaim of the last configured course."""
    return await serialize(spawner.get_pvc_manifest())
