"""Issuing credentials: each of ``n`` Open Badges issued the way the service does it (a status list index reserved
in the state database, the credential built and signed with eddsa-rdfc-2022, the signed document stored),
timed one by one.

Baseline, in the same run: canonicalising the same unsigned credential once with pyld (RDFC-1.0), the floor
of any signer of this cryptosuite (a signature canonicalises the document and the proof options, so about
twice that is the least it can cost).
"""

import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from aifhub.credentials import badge, proof, store
from aifhub.credentials.issuer import CredentialIssuer
from aifhub.state.db import Database, sqlite_url

GOAL_S = 0.2
COURSE = SimpleNamespace(id="gpu-fundamentals", title="GPU Programming Fundamentals", description="Matrix products.")
RULE = {"assignments": {"ps1-matmul": {"min_score": 6}}, "sessions": 2, "sign_off": True}
FIGURES = {"assignments": {"ps1-matmul": 8.0}, "sessions": 2, "hours": 5.5, "gpu_hours": 2.25, "signed_off_by": "prof"}


def _p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def issue_timing(n=1000, folder=None):
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        state = Path(tmp)
        issuer = CredentialIssuer(state)
        db = Database(sqlite_url(state / "aifhub.sqlite"), checkpointer=False)
        fingerprint = issuer.keys.current.fingerprint
        times, floor = [], []
        try:
            for i in range(n):
                t0 = time.perf_counter()
                reserved = db.call(store.reserve, f"learner{i}", COURSE.id, fingerprint)
                signed = issuer.completion(
                    reserved["id"], reserved["status_index"], COURSE, RULE, f"learner{i}", FIGURES
                )
                db.call(store.store_document, reserved["id"], signed)
                times.append(time.perf_counter() - t0)
                unsigned = {k: v for k, v in signed.items() if k != "proof"}
                t1 = time.perf_counter()
                proof.canonical(unsigned)
                floor.append(time.perf_counter() - t1)
            assert issuer.check(signed)["verified"]
            assert badge.criteria_narrative(RULE) in signed["credentialSubject"]["achievement"]["criteria"]["narrative"]
        finally:
            db.close()
    return {
        "n": n,
        "p50_s": statistics.median(times),
        "p95_s": _p(times, 0.95),
        "max_s": max(times),
        "canonical_p50_s": statistics.median(floor),
    }
