"""Where the z2jh hub pod's configuration lived before aifhub 0.3 (removed in 0.4.0): it is :mod:`aifhub.hubside.z2jh` now.

Kept so that values rendered by an older ``aifhub k8s render`` (``hub.extraConfig`` importing
``aifhub.deploy.hubside``) still configure the hub.
"""

from ..compat import moved

from ..hubside.z2jh import configure_z2jh, service_address, service_command  # noqa: F401

moved("aifhub.deploy.hubside", "aifhub.hubside.z2jh")
