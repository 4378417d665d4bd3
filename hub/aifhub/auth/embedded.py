"""The hub configuration of a real login (``aifhub up --auth oidc|lti13``)."""

import os
from pathlib import Path

from traitlets.config import Config

from . import config


def crypt_key(state):
    """JupyterHub's key for encrypting auth state (tokens from the provider), kept in the state folder."""
    from ..hubside.embedded import read_or_create_secret

    return read_or_create_secret(Path(state) / "secrets" / "auth_state_key")


def configure_auth(c, mode, path, service_url, internal_token, state):
    """Set ``c`` up for ``mode`` with the settings of ``path``; raises AuthConfigError."""
    if not path:
        raise config.AuthConfigError(f"--auth {mode} needs --auth-config FILE with its settings (see docs/login.md)")
    hub, _service = config.load(path, mode)
    cls = config.hub_class(mode)
    c.JupyterHub.authenticator_class = config.ENTRY_POINTS[mode]
    section = Config(hub)
    section.aifhub_service_url = service_url
    section.aifhub_internal_token = internal_token
    c[cls.__name__] = section
    c.Authenticator.allow_all = False
    c.Authenticator.any_allow_config = True  # the authenticator's own rule decides (claims, a valid launch)
    c.Authenticator.enable_auth_state = True
    os.environ.setdefault("JUPYTERHUB_CRYPT_KEY", crypt_key(state))
    if mode == "lti13":
        # the LMS posts the launch from its own site: the hub's cookies must come along (https only)
        c.JupyterHub.tornado_settings = (
            {"cookie_options": {"SameSite": "None", "Secure": True}} if hub.get("uri_scheme") == "https" else {}
        )
    return cls
