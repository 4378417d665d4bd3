"""Whether a learner completed a course: pure functions of the rule, the gradebook and attendance.

A course's ``completion:`` (course.yaml) lists conditions that must all hold: a least score in named
assignments (their best graded submission), a number of the course's scheduled ``sessions:`` attended
(a sandbox of the course running during the session's window, from the ledger's session records), and
an instructor's sign-off.
"""

from ..classroom.attendance import attended  # noqa: F401  (the one rule of attendance; completion counts it)


def best_scores(rows, user):
    """``{assignment: best score}`` of ``user`` from gradebook rows (``student_id``, ``assignment_id``, ``score``)."""
    best = {}
    for row in rows:
        if row.get("student_id") != user or row.get("score") is None:
            continue
        aid = row["assignment_id"]
        best[aid] = max(best.get(aid, float("-inf")), float(row["score"]))
    return best


def evaluate(rule, scores, sessions_attended, signed_off):
    """``{complete, conditions: [{what, met, have, need}]}`` for a learner under ``rule``."""
    conditions = []
    for assignment, need in sorted((rule.get("assignments") or {}).items()):
        min_score = (need or {}).get("min_score")
        have = scores.get(assignment)
        met = have is not None and (min_score is None or have >= min_score)
        conditions.append(
            {"what": f"assignment {assignment}", "met": met, "have": have, "need": min_score, "kind": "assignment"}
        )
    if rule.get("sessions"):
        need = rule["sessions"]
        conditions.append(
            {
                "what": "sessions attended",
                "met": sessions_attended >= need,
                "have": sessions_attended,
                "need": need,
                "kind": "sessions",
            }
        )
    if rule.get("sign_off"):
        conditions.append(
            {
                "what": "instructor's sign-off",
                "met": bool(signed_off),
                "have": signed_off,
                "need": True,
                "kind": "sign_off",
            }
        )
    return {"complete": all(c["met"] for c in conditions), "conditions": conditions}
