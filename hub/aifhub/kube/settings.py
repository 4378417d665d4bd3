"""The Kubernetes settings the service's work on a cluster shares: where (namespace, kubeconfig), which
registry, which GPU pools.

Grading Jobs (:mod:`aifhub.grading.queue`) and placeholders (:mod:`aifhub.service.placeholders`) read one
:class:`KubeSettings`, made by the service's composition root (:mod:`aifhub.service.wiring`); the manifests
are built from plain values (:class:`Cluster`, :class:`aifhub.kube.grading_job.JobSettings`), so the
renderers stay pure and the CLI renders without any configuration.

The settings' old spellings (``GradingManager.kube_namespace``, ``kube_config``, ``kube_registry``,
``kube_gpu_pools``) still work until aifhub :data:`aifhub.compat.SHIMS_REMOVED_IN`: a value given under an
old name and not under the new one is taken, with a warning.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from traitlets import Dict, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import podspec

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# new name -> the name it had under GradingManager before aifhub 0.3
OLD_SPELLINGS = {
    "namespace": "kube_namespace",
    "kube_config": "kube_config",
    "registry": "kube_registry",
    "gpu_pools": "kube_gpu_pools",
}


@dataclass(frozen=True)
class Cluster:
    """What every object aifhub renders for a cluster needs: its namespace (None: the caller's), the registry
    prefixed to image repositories, and the GPU pools (checked, and filled in, on creation)."""

    namespace: str | None = None
    registry: str = ""
    pools: dict = field(default_factory=lambda: podspec.DEFAULT_POOLS)

    def __post_init__(self):
        object.__setattr__(self, "pools", podspec.validate_pools(self.pools))  # raises PodSpecError


class KubeSettings(LoggingConfigurable):
    """Where the service creates grading Jobs and placeholder pods, with which registry and GPU pools."""

    namespace = Unicode(
        help="Namespace of grading Jobs and placeholder pods. Default: $POD_NAMESPACE, else the service's own "
        "pod's namespace (its service account's), else 'default'."
    ).tag(config=True)
    kube_config = Unicode(
        help="kubeconfig file for the Kubernetes API; empty: the pod's own service account (in the cluster)."
    ).tag(config=True)
    registry = Unicode(
        help="Registry prefixed to sandbox image repositories in grading Jobs and placeholders. "
        "Default: $AIFHUB_REGISTRY."
    ).tag(config=True)
    gpu_pools = Dict(
        help="GPU pools (as KubeSandboxSpawner.gpu_pools) of grading Jobs and placeholders. Default: "
        "$AIFHUB_GPU_POOLS (JSON), else aifhub's example pools."
    ).tag(config=True)

    @default("namespace")
    def _namespace_default(self):
        if os.environ.get("POD_NAMESPACE"):
            return os.environ["POD_NAMESPACE"]
        path = SERVICE_ACCOUNT_NAMESPACE
        return path.read_text().strip() if path.exists() else "default"

    @default("registry")
    def _registry_default(self):
        return os.environ.get("AIFHUB_REGISTRY", "")

    @default("gpu_pools")
    def _gpu_pools_default(self):
        raw = os.environ.get("AIFHUB_GPU_POOLS")
        if not raw:
            return podspec.DEFAULT_POOLS
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"AIFHUB_GPU_POOLS is not JSON ({exc}); expected a mapping of GPU kind to pool")

    @validate("gpu_pools")
    def _validate_pools(self, proposal):
        try:
            return podspec.validate_pools(proposal.value)
        except podspec.PodSpecError as exc:
            raise ValueError(f"gpu_pools: {exc}")

    def __init__(self, **kw):
        super().__init__(**kw)
        old = self.config["GradingManager"] if "GradingManager" in self.config else {}
        new = self.config["KubeSettings"] if "KubeSettings" in self.config else {}
        for name, old_name in OLD_SPELLINGS.items():
            if old_name in old and name not in new and name not in kw:
                self.log.warning(
                    "GradingManager.%s is an old spelling (removed in aifhub 0.4.0): set KubeSettings.%s",
                    old_name,
                    name,
                )
                setattr(self, name, old[old_name])

    def cluster(self):
        """These settings as the renderers take them."""
        return Cluster(namespace=self.namespace, registry=self.registry, pools=self.gpu_pools)
