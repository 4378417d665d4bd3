"""The documents: an ``OpenBadgeCredential`` for a course completion, and the status list credential.

Pure functions of their inputs (no clock, no keys): :mod:`.issuer` dates and signs them. The layout
follows Open Badges 3.0 on the VC Data Model 2.0: the issuer is a ``Profile`` (its ``id`` is the DID that
signs), the achievement is the course (its description, criteria, and ESCO skill alignments when the course
names them), the subject names the learner (an ``IdentityObject`` of type ``name``), and the evidence
says what was done (scores, sessions attended, hours in sandboxes, GPU-hours).
"""

from . import contexts

ESCO = "ESCO"


def issuer_profile(issuer_id, name, url):
    profile = {"id": issuer_id, "type": ["Profile"], "name": name}
    if url:
        profile["url"] = url
    return profile


def criteria_narrative(rule):
    """The completion rule in words (the achievement's criteria)."""
    parts = []
    for assignment, need in sorted((rule.get("assignments") or {}).items()):
        min_score = need.get("min_score")
        parts.append(
            f"reach at least {min_score:g} points in the assignment {assignment}"
            if min_score is not None
            else f"hand in the assignment {assignment}"
        )
    if rule.get("sessions"):
        n = rule["sessions"]
        parts.append(f"attend {n} of the course's scheduled session{'s' if n != 1 else ''}")
    if rule.get("sign_off"):
        parts.append("be signed off by an instructor")
    if not parts:
        return "Complete the course."
    return "To complete the course, a learner must " + "; ".join(parts) + "."


def achievement(achievement_id, title, description, rule, skills=()):
    """The course as an Open Badges ``Achievement``; ``skills``: ``[{name, url}]`` of ESCO skills."""
    doc = {
        "id": achievement_id,
        "type": ["Achievement"],
        "achievementType": "Course",
        "name": title,
        "description": description or title,
        "criteria": {"narrative": criteria_narrative(rule)},
    }
    if skills:
        doc["alignment"] = [
            {"type": ["Alignment"], "targetName": s["name"], "targetUrl": s["url"], "targetFramework": ESCO}
            for s in skills
        ]
    return doc


def evidence(figures):
    """What was done, as ``Evidence`` entries: ``figures`` has ``assignments`` ``{id: score}``, ``sessions``
    (attended), ``hours`` (in sandboxes), ``gpu_hours``, ``signed_off_by``."""
    entries = []
    for assignment, score in sorted((figures.get("assignments") or {}).items()):
        entries.append(
            {
                "type": ["Evidence"],
                "name": f"Assignment {assignment}",
                "narrative": f"Score: {score:g} points.",
            }
        )
    summary = [
        f"Sessions attended: {figures.get('sessions', 0)}.",
        f"Hours in sandboxes: {figures.get('hours', 0):.2f}.",
        f"GPU-hours: {figures.get('gpu_hours', 0):.2f}.",
    ]
    if figures.get("signed_off_by"):
        summary.append(f"Signed off by {figures['signed_off_by']}.")
    entries.append({"type": ["Evidence"], "name": "Training", "narrative": " ".join(summary)})
    return entries


def status_entry(list_url, index):
    return {
        "id": f"{list_url}#{index}",
        "type": "BitstringStatusListEntry",
        "statusPurpose": "revocation",
        "statusListIndex": str(index),
        "statusListCredential": list_url,
    }


def completion_credential(
    credential_id, profile, achievement_doc, learner, evidence_list, status, valid_from, course_title
):
    """The unsigned ``OpenBadgeCredential``."""
    return {
        "@context": list(contexts.BADGE_CONTEXT),
        "id": credential_id,
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": f"{course_title}: completion",
        "issuer": profile,
        "validFrom": valid_from,
        "credentialSubject": {
            "type": ["AchievementSubject"],
            "identifier": [
                {"type": "IdentityObject", "identityHash": learner, "identityType": "name", "hashed": False}
            ],
            "achievement": achievement_doc,
        },
        "evidence": evidence_list,
        "credentialStatus": status,
    }


def status_list_credential(list_url, issuer_id, encoded_list, valid_from):
    """The unsigned ``BitstringStatusListCredential`` that says which credentials are revoked."""
    return {
        "@context": [contexts.CREDENTIALS_V2],
        "id": list_url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": issuer_id,
        "validFrom": valid_from,
        "credentialSubject": {
            "id": f"{list_url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": "revocation",
            "encodedList": encoded_list,
        },
    }
