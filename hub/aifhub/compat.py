"""The old import paths kept for users' configurations, and when they go.

aifhub 0.3 moved the hub's side of the plugin into :mod:`aifhub.hubside`; the modules at the old paths
(``aifhub.hubconfig``, ``aifhub.deploy.hubside``, ``aifhub.sandbox.local``, ``aifhub.sandbox.kube``) only
re-export the new ones, and each warns once, when it is imported, with :func:`moved`. They are removed in
:data:`SHIMS_REMOVED_IN`.
"""

import warnings

SHIMS_REMOVED_IN = "0.4.0"


def moved(old, new, stacklevel=3):
    """Warn (``DeprecationWarning``) that module ``old`` is now ``new`` and when ``old`` goes."""
    warnings.warn(
        f"{old} moved to {new} in aifhub 0.3 and will be removed in aifhub {SHIMS_REMOVED_IN}: "
        f"import from {new} instead (spawners: use the entry point names aifhub-local, aifhub-kube).",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
