# JupyterHub configuration of aifhub's embedded default (what `aifhub up` runs).
# Settings come from AIFHUB_* environment variables that `aifhub up` sets from its flags;
# add your own JupyterHub settings below the call.
from aifhub.hubside.embedded import configure

configure(c)  # noqa: F821 (c is JupyterHub's config object)
