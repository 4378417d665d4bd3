"""The tool's signing key: made once (RSA 2048, a 0600 PEM in the state's secrets), published as JWKS
for the LMS, used to sign the client assertions of AGS and NRPS token requests."""

import base64
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


class ToolKeys:
    def __init__(self, path):
        self.path = Path(path)
        self.private_key = self._load_or_create()
        public = self.private_key.public_key()
        self.public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode().rstrip("=")
        self.public_jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})

    def _load_or_create(self):
        if self.path.exists():
            return serialization.load_pem_private_key(self.path.read_bytes(), password=None)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key

    def jwks(self):
        return {"keys": [self.public_jwk]}

    def client_assertion(self, client_id, audience, lifetime=300):
        """The JWT a tool presents at the platform's token endpoint (IMS Security Framework 4.1)."""
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})
