"""The AI Factory as an issuer: its identity (a configured name and URL, a ``did:key`` or ``did:web``), its
keys, and signing and verifying credentials and the status list.

Nothing here touches the database or the network: :mod:`.service` feeds it what the database holds.
"""

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from traitlets import Unicode, default, validate
from traitlets.config import LoggingConfigurable

from . import badge, multikey, proof, statuslist
from .keys import KeyStore

PREFIX = "/services/aifhub/"


def now_iso():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CredentialIssuer(LoggingConfigurable):
    """Issues and verifies the AI Factory's Open Badges (see docs/credentials.md)."""

    issuer_name = Unicode("AI Factory", help="The issuer's name on every credential (the AI Factory's).").tag(
        config=True
    )
    issuer_url = Unicode("", help="The AI Factory's web site, shown in the issuer's profile ('' for none).").tag(
        config=True
    )
    public_url = Unicode(
        help="The hub's public URL (scheme and host, e.g. https://training.example.org): the status list and "
        "verification page links in credentials start with it. Default: $AIFHUB_PUBLIC_URL, else http://127.0.0.1:8000."
    ).tag(config=True)
    did_web = Unicode(
        "",
        help="A did:web identifier for the issuer (e.g. did:web:training.example.org:services:aifhub, whose DID "
        "document the service serves at /services/aifhub/did.json): the issuer's id stays the same across key "
        "rotations. '' (the default): each key is its own did:key, which verifiers resolve without asking us.",
    ).tag(config=True)

    @default("public_url")
    def _public_url_default(self):
        return os.environ.get("AIFHUB_PUBLIC_URL", "http://127.0.0.1:8000")

    @validate("public_url", "issuer_url")
    def _validate_url(self, proposal):
        value = proposal.value.rstrip("/")
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"{proposal.trait.name} must be an http(s) URL, got {value!r}")
        return value

    @validate("did_web")
    def _validate_did_web(self, proposal):
        if proposal.value and not proposal.value.startswith("did:web:"):
            raise ValueError(f"did_web must start with 'did:web:' (e.g. did:web:example.org), got {proposal.value!r}")
        return proposal.value

    def __init__(self, state_dir, **kw):
        super().__init__(**kw)
        self.keys = KeyStore(Path(state_dir) / "credentials")

    # -- identity ------------------------------------------------------------

    def issuer_id(self, key=None):
        key = key or self.keys.current
        return self.did_web or multikey.did_key(key.public_key)

    def verification_method(self, key=None):
        key = key or self.keys.current
        if self.did_web:
            return f"{self.did_web}#{key.fingerprint}"
        return multikey.did_key_method(key.public_key)

    def did_document(self):
        """The did:web DID document: every key, retired ones too (their credentials still verify)."""
        methods = [
            {
                "id": f"{self.did_web}#{k.fingerprint}",
                "type": "Multikey",
                "controller": self.did_web,
                "publicKeyMultibase": k.fingerprint,
            }
            for k in self.keys.keys
        ]
        return {
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": self.did_web,
            "verificationMethod": methods,
            "assertionMethod": [m["id"] for m in methods],
        }

    def resolve_key(self, method_id):
        """The public key of a verification method this issuer signs with: any ``did:key`` (the key is in the
        identifier), or our ``did:web`` with a key of ours. ValueError otherwise."""
        if isinstance(method_id, str) and method_id.startswith(multikey.DID_KEY):
            return multikey.resolve_did_key(method_id)
        if self.did_web and isinstance(method_id, str) and method_id.startswith(self.did_web + "#"):
            key = self.keys.by_fingerprint(method_id.partition("#")[2])
            if key is not None:
                return key.public_key
        raise ValueError(f"The verification method {method_id!r} is not a key of this issuer.")

    # -- URLs ----------------------------------------------------------------

    def url(self, path):
        return f"{self.public_url}{PREFIX}{path}"

    def status_list_url(self, fingerprint):
        """Each key signs the status list of the credentials it signed."""
        return self.url(f"credentials/status/{fingerprint}")

    def verify_url(self, credential_id):
        return self.url(f"verify/{credential_id}")

    # -- issuing -------------------------------------------------------------

    @staticmethod
    def new_id():
        return str(uuid.uuid4())

    def completion(self, credential_id, status_index, course, rule, learner, figures, skills=(), when=None):
        """The signed OpenBadgeCredential of ``learner`` completing ``course`` (CPU only: run it off the loop)."""
        when = when or now_iso()
        key = self.keys.current
        doc = badge.completion_credential(
            f"urn:uuid:{credential_id}",
            badge.issuer_profile(self.issuer_id(key), self.issuer_name, self.issuer_url),
            badge.achievement(self.url(f"courses/{course.id}"), course.title, course.description, rule, skills),
            learner,
            badge.evidence(figures),
            badge.status_entry(self.status_list_url(key.fingerprint), status_index),
            when,
            course.title,
        )
        return proof.sign(doc, key.private_key, self.verification_method(key), when)

    def status_list(self, fingerprint, revoked_indices, when=None):
        """The status list credential of the key ``fingerprint``, signed by it, with the bits of
        ``revoked_indices`` set; None for a key that is not ours."""
        key = self.keys.by_fingerprint(fingerprint)
        if key is None:
            return None
        when = when or now_iso()
        doc = badge.status_list_credential(
            self.status_list_url(key.fingerprint), self.issuer_id(key), statuslist.encode(revoked_indices), when
        )
        return proof.sign(doc, key.private_key, self.verification_method(key), when)

    # -- verifying -----------------------------------------------------------

    def check(self, credential, status_list=None):
        """Verify ``credential`` as a verifier would: its proof, that its issuer controls the signing key, and
        (given the status list credential) that it is not revoked. Returns ``{verified, revoked, errors}``."""
        errors = []
        revoked = False
        issuer = credential.get("issuer") if isinstance(credential, dict) else None
        issuer_id = issuer.get("id") if isinstance(issuer, dict) else issuer
        try:
            used = proof.verify(credential, self.resolve_key)
            if used["verificationMethod"].partition("#")[0] != issuer_id:
                errors.append("The credential's issuer does not control the key that signed it.")
        except proof.ProofError as exc:
            errors.append(str(exc))
        status = credential.get("credentialStatus") if isinstance(credential, dict) else None
        if isinstance(status, dict) and status_list is not None:
            try:
                proof.verify(status_list, self.resolve_key)
                if status_list.get("id") != status.get("statusListCredential"):
                    raise ValueError("it is not the list the credential names")
                if status_list.get("issuer") != issuer_id:
                    raise ValueError("it was issued by another issuer than the credential")
                bits = statuslist.decode(status_list["credentialSubject"]["encodedList"])
                revoked = statuslist.is_set(bits, int(status["statusListIndex"]))
            except (proof.ProofError, ValueError, KeyError, TypeError) as exc:
                errors.append(f"The status list cannot be checked: {exc}")
            if revoked:
                errors.append("The issuer has revoked this credential.")
        return {"verified": not errors, "revoked": revoked, "errors": errors}
