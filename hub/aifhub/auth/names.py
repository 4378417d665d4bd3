"""Stable, safe JupyterHub user names from an identity provider's claims.

Two styles:

``hashed`` (the default)
    ``<readable>-<digest>``: a readable part (the claim's text before any ``@``, lower-cased, every
    run of other characters than ``a-z0-9`` turned into one ``-``, at most 20 characters) and
    12 base32 characters of the SHA-256 of the issuer and the exact claim value. Every name has
    the same shape, so two different claims never give the same name (short of a 60-bit hash
    collision), and the same claim always gives the same name.
``claim``
    The claim as it is, when it already is a safe user name (``[a-z0-9][a-z0-9._@-]*``, at most
    64 characters); a value that is not is refused rather than altered, so no two claims can
    collide. For providers whose user names are already clean and never reassigned.
"""

import base64
import hashlib
import re

STYLES = ("hashed", "claim")
SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
READABLE_MAX = 20
DIGEST_CHARS = 12


class UnusableName(ValueError):
    """The claim cannot become a user name in this style; the message says why."""


def readable_part(value):
    text = value.split("@", 1)[0].lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:READABLE_MAX].strip("-")
    return text or "user"


def digest(value, issuer=""):
    raw = hashlib.sha256(f"{issuer}\n{value}".encode()).digest()
    return base64.b32encode(raw).decode("ascii").lower()[:DIGEST_CHARS]


def username_for(value, style="hashed", issuer="", casefold=False):
    """The user name for the claim ``value`` from ``issuer``; raises :class:`UnusableName`."""
    if not isinstance(value, str) or not value.strip():
        raise UnusableName("the identity provider sent no value for the user name claim")
    if casefold:
        value = value.lower()
    if style == "hashed":
        return f"{readable_part(value)}-{digest(value, issuer)}"
    if style == "claim":
        if not SAFE_NAME.match(value):
            raise UnusableName(
                f"{value!r} is not a safe user name (lower-case letters, digits and . _ @ -, at most 64 "
                "characters); use username_style 'hashed' for this claim"
            )
        return value
    raise UnusableName(f"unknown username_style {style!r}; expected one of {', '.join(STYLES)}")
