"""Multibase (base58btc), Ed25519 Multikeys and ``did:key`` identifiers.

A Multikey public key is ``z`` + base58btc(0xed 0x01 + the 32 key bytes); its ``did:key`` is
``did:key:<that>``, and the verification method ``did:key:<that>#<that>``: the DID *is* the key, so
a credential signed with it verifies without asking anybody for the key.
"""

import base58
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519_PUB = b"\xed\x01"  # the multicodec prefix of an Ed25519 public key
DID_KEY = "did:key:"


def encode(data):
    """Multibase base58btc: ``z`` + base58 (Bitcoin alphabet)."""
    return "z" + base58.b58encode(data).decode("ascii")


def decode(text):
    if not isinstance(text, str) or not text.startswith("z") or len(text) < 2:
        raise ValueError("Expected a multibase base58btc value (starting with 'z').")
    try:
        return base58.b58decode(text[1:])
    except ValueError as exc:
        raise ValueError(f"Not base58btc: {exc}")


def public_bytes(public_key):
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_multibase(public_key):
    """The Multikey ``publicKeyMultibase`` of an Ed25519 public key."""
    return encode(ED25519_PUB + public_bytes(public_key))


def public_from_multibase(value):
    """The Ed25519 public key of a ``publicKeyMultibase`` (ValueError when it is not one)."""
    raw = decode(value)
    if len(raw) != 34 or raw[:2] != ED25519_PUB:
        raise ValueError("Expected an Ed25519 Multikey (multicodec 0xed01, 32 key bytes).")
    return Ed25519PublicKey.from_public_bytes(raw[2:])


def did_key(public_key):
    return DID_KEY + public_multibase(public_key)


def did_key_method(public_key):
    """The verification method id of a key's ``did:key``: ``did:key:z6Mk...#z6Mk...``."""
    fingerprint = public_multibase(public_key)
    return f"{DID_KEY}{fingerprint}#{fingerprint}"


def resolve_did_key(method_id):
    """The public key a ``did:key`` verification method names (ValueError when it is not one)."""
    if not isinstance(method_id, str) or not method_id.startswith(DID_KEY):
        raise ValueError("Not a did:key verification method.")
    did, _, fragment = method_id.partition("#")
    fingerprint = did[len(DID_KEY) :]
    if fragment and fragment != fingerprint:
        raise ValueError("A did:key verification method's fragment must repeat its key.")
    return public_from_multibase(fingerprint)


def private_from_seed(seed):
    return Ed25519PrivateKey.from_private_bytes(seed)
