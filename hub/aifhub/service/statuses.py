"""HTTP statuses of refusals: the web layer's translation of :class:`aifhub.errors.Refusal` reasons.

The parts that decide (ledger, membership, admission, grading) say *why* they refuse; only the handlers
(and the CLI's exit codes) care which status that is.
"""

BAD_REQUEST = {
    "no-course",
    "bad-queue-status",
    "bad-name",
    "bad-id",
    "bad-hours",
    "bad-date",
    "bad-name-format",
    "bad-submission",
    "bad-event",
    "bad-field",
}
FORBIDDEN = {
    "not-enrolled",
    "not-started",
    "ended",
    "roster",
    "bad-code",
    "not-member",
    "instructors-only",
    "quota",
    "course-budget",
    "allocation-exhausted",
    "allocation-closed",
    "allocation-not-started",
    "allocation-expired",
    "staff-only",
}
NOT_FOUND = {
    "unknown-course",
    "unknown-allocation",
    "not-on-roster",
    "not-running",
    "not-released",
    "no-submission",
    "no-feedback",
    "no-assignment",
    "no-credential",
    "no-hand",
    "no-material",
}
CONFLICT = {
    "nothing-graded",
    "broken-course",
    "exists",
    "closed",
    "in-course-file",
    "no-allocation",
    "gpu-busy",
    "gpu-shared",
    "same-timestamp",
    "not-runnable",
    "no-completion",
    "not-complete",
    "taken",
    "already-shared",
    "not-asked",
    "not-shared",
    "no-work-folder",
}
OTHER = {
    "too-large": 413,
    "too-many": 429,
    "no-gpu": 503,
    "disk-full": 503,
    "gradebook-unavailable": 503,
    "step-failed": 500,
    "step-timeout": 504,
    "credentials-full": 503,
    "share-failed": 502,
}


def status_of(reason):
    """The HTTP status for a refusal's ``reason`` (409 for one this table does not know: refused as it stands)."""
    if reason in BAD_REQUEST:
        return 400
    if reason in FORBIDDEN:
        return 403
    if reason in NOT_FOUND:
        return 404
    if reason in CONFLICT:
        return 409
    return OTHER.get(reason, 409)


def is_bad_input(reason):
    return status_of(reason) == 400
