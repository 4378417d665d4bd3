"""The issuer's signing keys: generated once, kept in the state directory, rotated without breaking old credentials.

Threat model: whoever reads the private key can issue credentials in the AI Factory's name. The key file
lives in the service's state directory (``credentials/issuer-keys.json``), which learners never reach
(their sandboxes see their own work folder only); the folder is created mode 0700 and the file 0600, it
is written by creating a fresh file (``O_EXCL | O_NOFOLLOW``) and renaming it over the old one, and a
key file readable by others is refused at load.

Rotation appends a new key and retires the old one: new credentials are signed with the new key, and the
old one is kept (its public half only is ever published) so the credentials it signed still verify. With
``did:key`` identifiers (the default) every key is its own DID, so a verifier needs nothing from us; with a
configured ``did:web`` the DID document (``/services/aifhub/did.json``) lists every key, retired ones
included, as an assertion method.
"""

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from . import multikey

FILE = "issuer-keys.json"


class KeyFileError(ValueError):
    """A key file that cannot be used as it is (permissions, format)."""


def _now():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seed(private_key):
    return private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


class IssuerKey:
    """One Ed25519 key: its private half, when it was made, and when it was retired (None: current)."""

    def __init__(self, private_key, created, retired=None):
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.created = created
        self.retired = retired
        self.fingerprint = multikey.public_multibase(self.public_key)

    def to_dict(self):
        return {"seed": _seed(self.private_key).hex(), "created": self.created, "retired": self.retired}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(multikey.private_from_seed(bytes.fromhex(d["seed"])), d["created"], d.get("retired"))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyFileError(f"A key in the issuer key file is malformed ({exc}).")


class KeyStore:
    """The keys in ``<state>/credentials/issuer-keys.json``; the file is made on first use."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / FILE
        self.keys = self._load()
        if not self.keys:
            self.keys = [IssuerKey(Ed25519PrivateKey.generate(), _now())]
            self._save()

    def _load(self):
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"{self.path} is not a plain file.")
            if st.st_mode & 0o077:
                raise KeyFileError(
                    f"{self.path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): its keys sign "
                    "credentials in the issuer's name. Make it mode 0600 (chmod 600), or rotate the key if it leaked."
                )
            try:
                data = json.loads(f.read())
                return [IssuerKey.from_dict(d) for d in data["keys"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise KeyFileError(f"{self.path} is not an issuer key file ({exc}).")

    def _save(self):
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        tmp = self.folder / f".{FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"keys": [k.to_dict() for k in self.keys]}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @property
    def current(self):
        """The key new credentials are signed with."""
        return next(k for k in reversed(self.keys) if k.retired is None)

    def rotate(self):
        """Retire the current key and make a new one; returns the new key."""
        when = _now()
        for key in self.keys:
            if key.retired is None:
                key.retired = when
        new = IssuerKey(Ed25519PrivateKey.generate(), when)
        self.keys.append(new)
        self._save()
        return new

    def by_fingerprint(self, fingerprint):
        return next((k for k in self.keys if k.fingerprint == fingerprint), None)
