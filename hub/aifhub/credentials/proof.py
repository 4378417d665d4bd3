"""The ``eddsa-rdfc-2022`` Data Integrity proof (W3C VC Data Integrity EdDSA Cryptosuites v1.0, section 3.2).

To sign a document: the proof options (``type``, ``cryptosuite``, ``created``, ``verificationMethod``,
``proofPurpose``) take the document's ``@context``; both are canonicalised with RDFC-1.0 (pyld's
URDNA2015, which is the same algorithm) to N-Quads and hashed with SHA-256; the proof's hash followed
by the document's is signed with Ed25519; ``proofValue`` is the signature in multibase base58btc.
Verifying redoes the hashes from the document without its ``proof`` and checks the signature against
the key the verification method names (resolved by the caller: see :func:`verify`).

The algorithm is checked byte for byte against the Open Badges 3.0 specification's test vector
(tests/test_credentials.py).
"""

import copy
import hashlib
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from pyld import jsonld

from . import contexts, multikey

PROOF_TYPE = "DataIntegrityProof"
CRYPTOSUITE = "eddsa-rdfc-2022"


class ProofError(ValueError):
    """A proof that does not verify, with the reason in words."""


def canonical(document, loader=None):
    """The RDFC-1.0 canonical N-Quads of ``document`` (only bundled contexts are loaded)."""
    return jsonld.normalize(
        document,
        {"algorithm": "URDNA2015", "format": "application/n-quads", "documentLoader": loader or contexts.loader},
    )


def hash_data(document, proof_options, loader=None):
    """SHA-256 of the canonical proof options, then of the canonical document (what is signed)."""
    config = dict(proof_options)
    config.pop("proofValue", None)
    config["@context"] = document["@context"]
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    proof_hash = hashlib.sha256(canonical(config, loader).encode("utf-8")).digest()
    doc_hash = hashlib.sha256(canonical(unsecured, loader).encode("utf-8")).digest()
    return proof_hash + doc_hash


def proof_options(verification_method, created, purpose="assertionMethod"):
    return {
        "type": PROOF_TYPE,
        "created": created,
        "verificationMethod": verification_method,
        "cryptosuite": CRYPTOSUITE,
        "proofPurpose": purpose,
    }


def sign(document, private_key, verification_method, created, loader=None):
    """``document`` with an ``eddsa-rdfc-2022`` proof added (a new dict; ``document`` is left as it is)."""
    options = proof_options(verification_method, created)
    signature = private_key.sign(hash_data(document, options, loader))
    signed = copy.deepcopy(document)
    signed["proof"] = {**options, "proofValue": multikey.encode(signature)}
    return signed


def verify(document, resolve_key, loader=None, purpose="assertionMethod"):
    """Check ``document``'s proof; returns the proof. ``resolve_key(verification_method)`` gives the
    Ed25519 public key, or raises ValueError for a method it does not trust. Raises :class:`ProofError`."""
    proof = document.get("proof") if isinstance(document, dict) else None
    if not isinstance(proof, dict):
        raise ProofError("The credential carries no proof (or more than one).")
    if proof.get("type") != PROOF_TYPE or proof.get("cryptosuite") != CRYPTOSUITE:
        raise ProofError(f"Expected a {PROOF_TYPE} with the {CRYPTOSUITE} cryptosuite.")
    if proof.get("proofPurpose") != purpose:
        raise ProofError(f"Expected a proof for {purpose}.")
    created = proof.get("created")
    try:
        datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        raise ProofError("The proof's 'created' is not a date and time.")
    try:
        public_key = resolve_key(proof.get("verificationMethod"))
        signature = multikey.decode(proof.get("proofValue"))
    except ValueError as exc:
        raise ProofError(str(exc))
    try:
        data = hash_data(document, proof, loader)
    except jsonld.JsonLdError as exc:
        raise ProofError(f"The credential cannot be canonicalised: {exc}")
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        raise ProofError("The signature does not match: the credential was changed, or signed by another key.")
    return proof
