"""The local spawner's old path: :mod:`aifhub.hubside.local`."""

from ..hubside.local import LocalSandboxSpawner  # noqa: F401
