"""The Kubernetes spawner's old path: :mod:`aifhub.hubside.kube`."""

from ..compat import moved

from ..hubside.kube import KubeSandboxSpawner  # noqa: F401

moved("aifhub.sandbox.kube", "aifhub.hubside.kube")
