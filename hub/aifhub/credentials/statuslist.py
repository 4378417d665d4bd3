"""The W3C Bitstring Status List: one bit per credential, set when it is revoked.

``encodedList`` is ``u`` + base64url (no padding) of the GZIP-compressed bitstring, whose first index is
the most significant bit of the first byte. A list has at least 131,072 entries (16 KiB), the
specification's minimum, so a list says nothing about how many credentials exist.
"""

import base64
import gzip

SIZE = 131072  # entries in a list (the specification's minimum: 16 KiB uncompressed)


def encode(revoked, size=SIZE):
    """The ``encodedList`` with the bits of the indices in ``revoked`` set."""
    bits = bytearray(size // 8)
    for index in revoked:
        if not 0 <= index < size:
            raise ValueError(f"Status list index {index} is outside 0..{size - 1}.")
        bits[index // 8] |= 0x80 >> (index % 8)
    packed = gzip.compress(bytes(bits), mtime=0)
    return "u" + base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def decode(encoded):
    """The bitstring of an ``encodedList`` (ValueError when it is not one)."""
    if not isinstance(encoded, str) or not encoded.startswith("u"):
        raise ValueError("Expected a multibase base64url encodedList (starting with 'u').")
    data = encoded[1:]
    try:
        return gzip.decompress(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"The encodedList is not GZIP in base64url: {exc}")


def is_set(bits, index):
    if not 0 <= index < len(bits) * 8:
        raise ValueError(f"Status list index {index} is outside the list.")
    return bool(bits[index // 8] & (0x80 >> (index % 8)))
