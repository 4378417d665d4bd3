"""The Kubernetes spawner's old path: :mod:`aifhub.hubside.kube`."""

from ..hubside.kube import KubeSandboxSpawner  # noqa: F401
