"""``aifhub up --auth demo|oidc|lti13 --auth-config FILE``: the login file and what it configures.

The file is YAML with one section per login kind, each key a setting (a traitlets trait) of the
class that uses it::

    oidc:                       # AifhubOIDCAuthenticator (and oauthenticator's GenericOAuthenticator)
      issuer: https://proxy.myaccessid.org/
      client_id: aifhub-training
      client_secret_file: oidc-client-secret
    lti13:                      # AifhubLTI13Authenticator (hub) and LtiTool (the service's AGS/NRPS client)
      issuer: https://moodle.example.org
      client_id: [aBcD1234]
      authorize_url: https://moodle.example.org/mod/lti/auth.php
      jwks_endpoint: https://moodle.example.org/mod/lti/certs.php
      token_url: https://moodle.example.org/mod/lti/token.php

Relative file paths (``*_file``) are relative to the file's folder. A key no class knows is an error
that names the file, the section and the key.
"""

from pathlib import Path

import yaml

MODES = ("demo", "oidc", "lti13")
ENTRY_POINTS = {"oidc": "aifhub-oidc", "lti13": "aifhub-lti13"}


class AuthConfigError(ValueError):
    """The login file cannot be used; the message names the file, the key and what is expected."""


def hub_class(mode):
    if mode == "oidc":
        from .oidc import AifhubOIDCAuthenticator

        return AifhubOIDCAuthenticator
    from .lti13 import AifhubLTI13Authenticator

    return AifhubLTI13Authenticator


def service_class(mode):
    if mode == "lti13":
        from ..lti.tool import LtiTool

        return LtiTool
    return None


def _settable(cls):
    return set(cls.class_trait_names(config=True)) if cls else set()


def load(path, mode):
    """``(hub_settings, service_settings)`` of ``mode``'s section of the login file ``path``."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise AuthConfigError(f"--auth-config {path}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise AuthConfigError(f"--auth-config {path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise AuthConfigError(f"--auth-config {path}: expected a mapping with sections {', '.join(ENTRY_POINTS)}")
    unknown = set(doc) - set(ENTRY_POINTS)
    if unknown:
        raise AuthConfigError(
            f"--auth-config {path}: unknown section(s) {', '.join(sorted(unknown))}; "
            f"expected {' and/or '.join(ENTRY_POINTS)}"
        )
    section = doc.get(mode)
    if not isinstance(section, dict) or not section:
        raise AuthConfigError(
            f"--auth-config {path}: --auth {mode} needs a '{mode}:' section with its settings (see docs/login.md)"
        )
    hub_keys, service_keys = _settable(hub_class(mode)), _settable(service_class(mode))
    hub, service = {}, {}
    for key, value in section.items():
        if key not in hub_keys | service_keys:
            raise AuthConfigError(
                f"--auth-config {path}: {mode}.{key} is not a setting of the {mode} login "
                "(see docs/login.md for the settings)"
            )
        if key.endswith("_file") and isinstance(value, str) and value:
            value = str((path.parent / value).resolve())
        if key in hub_keys:
            hub[key] = value
        if key in service_keys:
            service[key] = value
    if mode == "oidc" and "course_rules" in hub:
        from .claims import parse_rules

        try:  # refused here, before the hub starts, with the rule that trusts too much named
            parse_rules(hub["course_rules"], where="oidc.course_rules")
        except ValueError as exc:
            raise AuthConfigError(f"--auth-config {path}: {exc}") from exc
    return hub, service
