"""Completion credentials: Open Badges 3.0 (W3C Verifiable Credentials 2.0) signed with ``eddsa-rdfc-2022``.

Built bottom up, each module importing only those below it:

* :mod:`.contexts`: the JSON-LD contexts shipped in the package, and a document loader that serves only them
  (issuing and verifying never reach the network);
* :mod:`.multikey`: base58btc multibase, Ed25519 Multikeys and ``did:key`` identifiers;
* :mod:`.proof`: the ``DataIntegrityProof`` of the ``eddsa-rdfc-2022`` cryptosuite (RDFC-1.0 with pyld,
  SHA-256, Ed25519 with cryptography): create and verify;
* :mod:`.keys`: the issuer's signing keys, generated once, kept in the state directory (mode 0600), rotatable;
* :mod:`.statuslist`: the W3C Bitstring Status List that revokes credentials;
* :mod:`.badge`: the ``OpenBadgeCredential`` of a course completion, and the status list credential;
* :mod:`.models`, :mod:`.store`: the tables and the units of work over them;
* :mod:`.completion`: whether a learner completed a course (assignments, sessions, sign-off);
* :mod:`.report`: the training report (trainees, participations, completions, hours) with small cells suppressed.
"""
