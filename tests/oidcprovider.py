"""Dex, a real OpenID Connect provider, for the login tests: static users with groups, one client.

``make test`` builds Dex from its Go module (``scripts/build-dex``, cached by version outside the
checkout). :func:`dex_binary` says where it is, building it when missing; :class:`Dex` runs one.
"""

import shutil
import subprocess
import time
from pathlib import Path

import bcrypt
import requests
import yaml

from hubrunner import free_port

REPO = Path(__file__).resolve().parent.parent
CLIENT_ID = "aifhub-tests"
CLIENT_SECRET = "dex-client-secret-for-the-tests"


def dex_binary():
    """The Dex binary's path, or a string starting with 'skip:' saying why there is none."""
    if shutil.which("go") is None:
        return "skip: Go is not installed, so Dex (the tests' OIDC provider) cannot be built"
    out = subprocess.run([str(REPO / "scripts" / "build-dex")], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise AssertionError(f"scripts/build-dex failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def dex_sub(user_id, connector="local"):
    """The ``sub`` claim Dex gives a user: its ID token subject (user id and connector id, protobuf) in base64url."""
    import base64

    def field(number, text):
        data = text.encode()
        return bytes([number << 3 | 2, len(data)]) + data

    return base64.urlsafe_b64encode(field(1, user_id) + field(2, connector)).rstrip(b"=").decode()


class Dex:
    """One Dex process: ``users`` is ``[{username, email, password, groups[, id]}]`` (``username`` is the ``name``
    claim Dex gives; ``id``, default the username, makes the ``sub`` claim: :func:`dex_sub`)."""

    def __init__(self, binary, folder, users, redirect_uri, token_expiry="10m"):
        self.binary = binary
        self.folder = Path(folder)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/dex"
        self.config = self.folder / "dex.yaml"
        self.log_path = self.folder / "dex.log"
        self.folder.mkdir(parents=True, exist_ok=True)
        hashed = lambda p: bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=10)).decode()  # noqa: E731
        self.config.write_text(
            yaml.safe_dump(
                {
                    "issuer": self.issuer,
                    "storage": {"type": "memory"},
                    "web": {"http": f"127.0.0.1:{self.port}"},
                    "logger": {"level": "info"},
                    "expiry": {"idTokens": token_expiry},
                    "oauth2": {"skipApprovalScreen": True},
                    "enablePasswordDB": True,
                    "staticClients": [
                        {"id": CLIENT_ID, "secret": CLIENT_SECRET, "name": "aifhub", "redirectURIs": [redirect_uri]}
                    ],
                    "staticPasswords": [
                        {
                            "email": u["email"],
                            "username": u["username"],
                            "userID": u.get("id", u["username"]),
                            "hash": hashed(u["password"]),
                            "groups": u.get("groups", []),
                        }
                        for u in users
                    ],
                }
            )
        )
        self.proc = None

    def start(self, timeout=30):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dex exited early; see {self.log_path}"
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"dex did not answer in {timeout}s; see {self.log_path}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
