"""Open Badges 3.0 credentials: the specification's test vector byte for byte, an independent verifier (Digital
Bazaar's VC libraries under Node) on fresh credentials, revocation through the status list, the issuer's keys."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyld.jsonld import JsonLdError

from aifhub.credentials import completion, contexts, multikey, proof, statuslist, store
from aifhub.credentials.issuer import CredentialIssuer
from aifhub.credentials.keys import KeyFileError, KeyStore
from aifhub.state.db import Database, sqlite_url

HERE = Path(__file__).parent
VECTOR = HERE / "data" / "ob3-vector"
VERIFIER = HERE / "credverify" / "verify.mjs"
# The vector's credential names the Open Badges context by an older URL; its content is the 3.0.0 context
OB_VECTOR_URL = "https://purl.imsglobal.org/spec/ob/v3p0/context/ob_v3p0.jsonld"

COURSE = SimpleNamespace(id="gpu-intro", title="GPU programming, first steps", description="CUDA and PyTorch on GPUs.")
RULE = {"assignments": {"ps1": {"min_score": 6}}, "sessions": 2, "sign_off": True}
FIGURES = {"assignments": {"ps1": 8.5}, "sessions": 2, "hours": 6.25, "gpu_hours": 1.5, "signed_off_by": "prof"}
SKILLS = [
    {"name": "use GPU programming", "url": "http://data.europa.eu/esco/skill/00000000-0000-0000-0000-000000000001"}
]


def vector_loader():
    return contexts.make_loader({OB_VECTOR_URL: json.loads(contexts.text(contexts.OB_V3_0_0))})


@pytest.fixture(scope="module")
def vector():
    return json.loads((VECTOR / "vector.json").read_text()), json.loads((VECTOR / "signed-credential.json").read_text())


def test_vector_canonical_forms_and_hashes(vector):
    expected, signed = vector
    loader = vector_loader()
    unsecured = {k: v for k, v in signed.items() if k != "proof"}
    doc_nq = proof.canonical(unsecured, loader)
    assert doc_nq == (VECTOR / "document-normalized.nq").read_text()
    assert hashlib.sha256(doc_nq.encode()).hexdigest() == expected["document_hash_hex"]
    config = {k: v for k, v in signed["proof"].items() if k != "proofValue"} | {"@context": signed["@context"]}
    proof_nq = proof.canonical(config, loader)
    assert proof_nq == (VECTOR / "proof-normalized.nq").read_text()
    assert hashlib.sha256(proof_nq.encode()).hexdigest() == expected["proof_hash_hex"]


def test_vector_signature_byte_for_byte(vector):
    expected, signed = vector
    secret = bytes.fromhex(expected["private_key_hex"])
    key = multikey.private_from_seed(secret[:32])
    assert multikey.public_bytes(key.public_key()).hex() == expected["public_key_hex"] == secret[32:].hex()
    assert multikey.public_multibase(key.public_key()) == expected["public_key_multibase"]
    unsecured = {k: v for k, v in signed.items() if k != "proof"}
    ours = proof.sign(
        unsecured, key, signed["proof"]["verificationMethod"], signed["proof"]["created"], vector_loader()
    )
    assert multikey.decode(ours["proof"]["proofValue"]).hex() == expected["signature_hex"]
    assert ours["proof"]["proofValue"] == expected["proof_value"]
    assert ours == signed  # the whole signed credential, as the specification prints it


def test_vector_verifies_and_a_changed_byte_does_not(vector):
    expected, signed = vector
    public = multikey.public_from_multibase(expected["public_key_multibase"])
    assert proof.verify(signed, lambda vm: public, vector_loader())["proofValue"] == expected["proof_value"]
    changed = json.loads(json.dumps(signed).replace("Teamwork Badge", "Teamwork Badgf"))
    with pytest.raises(proof.ProofError, match="does not match"):
        proof.verify(changed, lambda vm: public, vector_loader())


def test_loader_serves_only_bundled_contexts():
    assert contexts.loader(contexts.CREDENTIALS_V2)["document"]["@context"]["@protected"] is True
    with pytest.raises(Exception, match="not one of the contexts aifhub ships"):
        contexts.loader("https://example.org/evil-context.jsonld")
    doc = {"@context": ["https://example.org/evil-context.jsonld"], "name": "x"}
    with pytest.raises(JsonLdError):
        proof.canonical(doc)


@pytest.mark.parametrize(
    "url,package,path",
    [
        (contexts.CREDENTIALS_V2, "@digitalbazaar/credentials-context", "contexts/v2.jsonld"),
        (contexts.CREDENTIALS_V1, "@digitalbazaar/credentials-context", "contexts/v1.jsonld"),
    ],
)
def test_bundled_contexts_are_the_published_ones(url, package, path):
    """The copies in the package are those of the npm packages the independent verifier installs."""
    published = HERE / "credverify" / "node_modules" / package / path
    if not published.exists():
        pytest.skip(f"{package} is not installed (make setup installs it)")
    assert json.loads(published.read_text()) == json.loads(contexts.text(url))


# -- our credentials ---------------------------------------------------------


@pytest.fixture
def issuer(tmp_path):
    return CredentialIssuer(tmp_path / "state", issuer_url="https://ai-factory.example.eu")


def issue(issuer, index=7, learner="alice"):
    return issuer.completion(issuer.new_id(), index, COURSE, RULE, learner, FIGURES, SKILLS)


def test_completion_credential_is_an_open_badge(issuer):
    cred = issue(issuer)
    assert cred["@context"] == ["https://www.w3.org/ns/credentials/v2", contexts.OB_V3]
    assert cred["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert cred["issuer"]["id"].startswith("did:key:z6Mk") and cred["issuer"]["name"] == "AI Factory"
    achievement = cred["credentialSubject"]["achievement"]
    assert achievement["name"] == COURSE.title and "ps1" in achievement["criteria"]["narrative"]
    assert achievement["alignment"][0]["targetUrl"] == SKILLS[0]["url"]
    assert cred["credentialSubject"]["identifier"][0]["identityHash"] == "alice"
    assert "GPU-hours: 1.50" in cred["evidence"][-1]["narrative"]
    assert cred["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    assert cred["proof"]["verificationMethod"].partition("#")[0] == cred["issuer"]["id"]
    assert issuer.check(cred) == {"verified": True, "revoked": False, "errors": []}


def test_status_list_bits():
    bits = statuslist.decode(statuslist.encode([0, 9, statuslist.SIZE - 1]))
    assert len(bits) == statuslist.SIZE // 8 and bits[0] == 0x80 and bits[1] == 0x40
    assert [i for i in range(16) if statuslist.is_set(bits, i)] == [0, 9]
    assert statuslist.is_set(bits, statuslist.SIZE - 1)
    with pytest.raises(ValueError):
        statuslist.encode([statuslist.SIZE])


def test_revoked_and_tampered_fail_our_check(issuer):
    cred = issue(issuer)
    fp = issuer.keys.current.fingerprint
    assert issuer.check(cred, issuer.status_list(fp, []))["verified"]
    result = issuer.check(cred, issuer.status_list(fp, [7]))
    assert result["revoked"] and not result["verified"]
    tampered = json.loads(json.dumps(cred).replace('"alice"', '"mallory"'))
    assert not issuer.check(tampered)["verified"]


def test_keys_stored_0600_and_rotation_keeps_old_credentials_verifying(tmp_path):
    state = tmp_path / "state"
    issuer = CredentialIssuer(state)
    path = state / "credentials" / "issuer-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    old = issue(issuer)
    first = issuer.keys.current.fingerprint
    assert KeyStore(state / "credentials").current.fingerprint == first  # generated once, then loaded
    issuer.keys.rotate()
    new = issue(issuer)
    assert new["issuer"]["id"] != old["issuer"]["id"]
    reloaded = CredentialIssuer(state)
    assert reloaded.keys.current.fingerprint != first and len(reloaded.keys.keys) == 2
    assert reloaded.check(old)["verified"] and reloaded.check(new)["verified"]
    assert reloaded.status_list(first, [])["issuer"] == old["issuer"]["id"]  # the old key signs its own list
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        KeyStore(state / "credentials")


def test_did_web_issuer_lists_every_key(tmp_path):
    issuer = CredentialIssuer(tmp_path / "state", did_web="did:web:ai-factory.example.eu:services:aifhub")
    old = issue(issuer)
    issuer.keys.rotate()
    new = issue(issuer)
    assert old["issuer"]["id"] == new["issuer"]["id"] == issuer.did_web
    doc = issuer.did_document()
    assert len(doc["assertionMethod"]) == 2
    assert issuer.check(old)["verified"] and issuer.check(new)["verified"]
    with pytest.raises(Exception, match="did:web"):
        CredentialIssuer(tmp_path / "other", did_web="https://example.org")


# -- the independent verifier -----------------------------------------------


def node_verify(credential, documents=None):
    """Verify with @digitalbazaar/vc and the eddsa-rdfc-2022 cryptosuite (tests/credverify)."""
    node = shutil.which("node")
    if node is None or not (VERIFIER.parent / "node_modules" / "@digitalbazaar" / "vc").exists():
        pytest.skip("node or the verifier's npm packages are missing (make setup installs them)")
    out = subprocess.run(
        [node, str(VERIFIER)],
        input=json.dumps({"credential": credential, "documents": documents or {}}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_independent_verifier_accepts_a_fresh_credential_and_rejects_changes(issuer):
    cred = issue(issuer)
    status = issuer.status_list(issuer.keys.current.fingerprint, [])
    docs = {status["id"]: status}
    ok = node_verify(cred, docs)
    assert ok["verified"] is True and ok["revoked"] is False, ok
    changed = json.loads(json.dumps(cred).replace("Hours in sandboxes: 6.25", "Hours in sandboxes: 9.25"))
    assert changed != cred
    bad = node_verify(changed, docs)
    assert bad["verified"] is False and "signature" in bad["error"].lower(), bad


def test_independent_verifier_rejects_a_wrong_key(issuer, tmp_path):
    cred = issue(issuer)
    other = CredentialIssuer(tmp_path / "other")
    # the proof claims the issuer's key, but another key signed it
    forged = proof.sign(
        {k: v for k, v in cred.items() if k != "proof"},
        other.keys.current.private_key,
        cred["proof"]["verificationMethod"],
        cred["proof"]["created"],
    )
    status = issuer.status_list(issuer.keys.current.fingerprint, [])
    result = node_verify(forged, {status["id"]: status})
    assert result["verified"] is False, result
    assert not issuer.check(forged)["verified"]
    # and signed by the other key under its own did:key, it is not the AI Factory's credential
    assert other.issuer_id() != cred["issuer"]["id"]


def test_independent_verifier_rejects_a_revoked_credential(issuer):
    cred = issue(issuer, index=4242)
    revoked = issuer.status_list(issuer.keys.current.fingerprint, [4242])
    result = node_verify(cred, {revoked["id"]: revoked})
    assert result["verified"] is False and result["revoked"] is True, result
    other = issuer.status_list(issuer.keys.current.fingerprint, [4241])
    assert node_verify(cred, {other["id"]: other})["verified"] is True


# -- the state: status list indices, completion --------------------------------


def test_each_credential_gets_its_own_status_index(tmp_path):
    db = Database(sqlite_url(tmp_path / "s.sqlite"), checkpointer=False)
    try:
        first = db.call(store.reserve, "ada", "c1", "zKey")
        db.call(store.store_document, first["id"], {"x": 1})
        second = db.call(store.reserve, "bob", "c1", "zKey")
        third = db.call(store.reserve, "ada", "c2", "zKey")
        assert [first["status_index"], second["status_index"], third["status_index"]] == [0, 1, 2]
        assert db.call(store.reserve, "ada", "c1", "zKey") is None  # holds one already
        db.call(store.revoke, "c1", first["id"], "prof", "")
        assert db.call(store.revoked_indices, "zKey") == [0]
        assert db.call(store.reserve, "ada", "c1", "zKey")["status_index"] == 3  # a revoked one never comes back
    finally:
        db.close()


def test_completion_rules():
    rows = [
        {"student_id": "ada", "assignment_id": "ps1", "score": 4.0},
        {"student_id": "ada", "assignment_id": "ps1", "score": 7.5},
        {"student_id": "bob", "assignment_id": "ps1", "score": 9.0},
        {"student_id": "ada", "assignment_id": "ps2", "score": None},
    ]
    assert completion.best_scores(rows, "ada") == {"ps1": 7.5}
    t = datetime(2026, 12, 1, 9, tzinfo=UTC)
    windows = [(t, t + timedelta(hours=2)), (t + timedelta(days=1), t + timedelta(days=1, hours=2))]
    spans = [(t - timedelta(hours=1), t + timedelta(minutes=1)), (t + timedelta(hours=2), t + timedelta(hours=3))]
    assert completion.attended(windows, spans) == 1  # touching the end of a window is not attending it
    assert completion.attended(windows, [(t + timedelta(days=1, hours=1), None)], now=t + timedelta(days=2)) == 1
    result = completion.evaluate(RULE, {"ps1": 7.5}, 1, None)
    assert not result["complete"]
    assert [c["met"] for c in result["conditions"]] == [True, False, False]
    assert completion.evaluate(RULE, {"ps1": 6}, 2, "prof")["complete"]
    assert not completion.evaluate({"assignments": {"ps1": {"min_score": 6}}}, {}, 0, None)["complete"]


def test_independent_verifier_with_a_did_web_issuer_across_rotation(tmp_path):
    issuer = CredentialIssuer(tmp_path / "state", did_web="did:web:ai-factory.example.eu:services:aifhub")
    old = issue(issuer, index=1)
    old_list = issuer.status_list(issuer.keys.current.fingerprint, [])
    issuer.keys.rotate()
    new = issue(issuer, index=2)
    new_list = issuer.status_list(issuer.keys.current.fingerprint, [2])
    docs = {issuer.did_web: issuer.did_document(), old_list["id"]: old_list, new_list["id"]: new_list}
    assert node_verify(old, docs)["verified"] is True  # signed by the retired key, still listed
    revoked = node_verify(new, docs)
    assert revoked["verified"] is False and revoked["revoked"] is True, revoked
    without_old_key = issuer.did_document()
    without_old_key["verificationMethod"] = without_old_key["verificationMethod"][1:]
    without_old_key["assertionMethod"] = without_old_key["assertionMethod"][1:]
    assert node_verify(old, docs | {issuer.did_web: without_old_key})["verified"] is False
