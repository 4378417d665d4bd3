"""The local spawner's old path: :mod:`aifhub.hubside.local`."""

from ..compat import moved

from ..hubside.local import LocalSandboxSpawner  # noqa: F401

moved("aifhub.sandbox.local", "aifhub.hubside.local")
