"""The demo login of ``aifhub up``: any user name with the one demo password.

JupyterHub's ``DummyAuthenticator.password`` is deprecated (5.3) and its ``SharedPasswordAuthenticator`` makes
whoever logs in with the shared password a non-admin, so the hub's ``admin`` user (an administrator through
the ``admin`` role the hub configuration assigns) could not log in with it. This authenticator checks the one
password and leaves roles to the hub's configuration.
"""

from hmac import compare_digest

from jupyterhub.auth import Authenticator
from traitlets import Unicode, validate

MIN_LENGTH = 8


class DemoAuthenticator(Authenticator):
    """Any user name with ``password`` logs in; who is an administrator comes from the hub's roles."""

    password = Unicode(
        help=f"The one password of the demo login (at least {MIN_LENGTH} characters). "
        "`aifhub up` sets it from $AIFHUB_DEMO_PASSWORD, or a random one it prints.",
    ).tag(config=True)

    @validate("password")
    def _validate_password(self, proposal):
        if len(proposal.value) < MIN_LENGTH:
            raise ValueError(
                f"DemoAuthenticator.password must be at least {MIN_LENGTH} characters long, "
                f"got {len(proposal.value)} (set AIFHUB_DEMO_PASSWORD to a longer one)"
            )
        return proposal.value

    async def authenticate(self, handler, data):
        if self.password and compare_digest((data.get("password") or "").encode(), self.password.encode()):
            return {"name": data.get("username", "")}
        return None
