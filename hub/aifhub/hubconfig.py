"""Where the embedded hub's configuration lived before aifhub 0.3 (removed in 0.4.0): it is :mod:`aifhub.hubside.embedded` now.

Kept so that a ``jupyterhub_config.py`` written for an older aifhub (``from aifhub.hubconfig import configure``)
still runs.
"""

from .compat import moved

from .hubside.embedded import configure, proxy_command, settings_from_env  # noqa: F401
from .hubside.service_entry import SERVICE_NAME, ConfigError, aifhub_roles  # noqa: F401

moved("aifhub.hubconfig", "aifhub.hubside.embedded")
