"""Claims → aifhub roles: which entitlement or group values make someone a learner or an instructor
of a course, or an admin.

A rule is ``{pattern, role[, course]}``. ``pattern`` is matched against each value of the groups or
entitlements claim as a whole; in it ``{course}`` stands for a course id (``[a-z0-9-]``) and ``*``
for any text within one segment: never a ``:`` or a ``#``, so a wildcard cannot stretch over a
URN's segments. ``role`` is ``learner``, ``instructor`` or ``admin``. A rule without ``{course}``
may name its ``course``; admin rules name none. For each value the first rule that matches
decides; instructor beats learner when two values give the same course.

Threat model: in a federation every home identity provider, and every other community, can put
any string in the entitlements it asserts. A value is only worth what its namespace and authority
are worth, so the rules that give power name both: an admin rule has no wildcard at all, and an
instructor rule none in an entitlement's namespace (``urn:<nid>:<namespace>:group:``) or authority
(``#<authority>``) (:func:`trust_problem`). There are no default rules: the operator names the
namespace and authority they trust, e.g. for AARC-G002 entitlements
(``urn:geant:<namespace>:group:<group>[:<subgroup>...][:role=<role>]#<authority>``)::

    urn:geant:myaccessid.org:group:aifhub:admins#aai.example                     → admin
    urn:geant:myaccessid.org:group:aifhub:{course}:role=instructor#aai.example   → instructor of {course}
    urn:geant:myaccessid.org:group:aifhub:{course}#aai.example                   → learner of {course}
"""

import re
from dataclasses import dataclass, field

ROLES = ("learner", "instructor", "admin")
COURSE = "{course}"
COURSE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")

DEFAULT_RULES = []  # none: a rule that grants anything names the namespace and authority it trusts
SEGMENT = r"[^:#]*"  # what ``*`` matches: text within one segment of a URN, never its ``:`` or ``#``


@dataclass(frozen=True)
class Rule:
    pattern: str
    role: str
    course: str | None = None
    regex: re.Pattern = field(compare=False, repr=False, default=None)

    def match(self, value):
        """The course this value grants (or ``""`` for an admin rule), else None."""
        m = self.regex.fullmatch(value)
        if m is None:
            return None
        if self.role == "admin":
            return ""
        return m.groupdict().get("course") or self.course


def compile_pattern(pattern):
    parts = re.split(r"(\{course\}|\*)", pattern)
    out = []
    for part in parts:
        if part == COURSE:
            out.append(r"(?P<course>[a-z0-9][a-z0-9-]*)")
        elif part == "*":
            out.append(SEGMENT)
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


def parse_rule(spec, where="course_rules"):
    """A :class:`Rule` from its mapping; raises ValueError saying what is wrong and what is expected."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: each rule must be a mapping {{pattern, role[, course]}}, got {spec!r}")
    unknown = set(spec) - {"pattern", "role", "course"}
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} in {spec!r}; "
            "a rule has pattern, role and optionally course"
        )
    pattern, role, course = spec.get("pattern"), spec.get("role"), spec.get("course")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{where}: a rule needs a non-empty pattern, got {pattern!r}")
    if role not in ROLES:
        raise ValueError(f"{where}: role of {pattern!r} must be one of {', '.join(ROLES)}, got {role!r}")
    placeholders = pattern.count(COURSE)
    if role == "admin":
        if placeholders or course:
            raise ValueError(f"{where}: the admin rule {pattern!r} may name no course")
    elif placeholders > 1:
        raise ValueError(f"{where}: {pattern!r} has {{course}} more than once")
    elif placeholders == 0 and not course:
        raise ValueError(f"{where}: {pattern!r} has no {{course}}: add one, or name the course with course: <id>")
    elif placeholders and course:
        raise ValueError(f"{where}: {pattern!r} has {{course}} and also names course {course!r}; use one")
    if course is not None and not (isinstance(course, str) and COURSE_ID.match(course)):
        raise ValueError(f"{where}: course {course!r} is not a course id ([a-z0-9-])")
    problem = trust_problem(pattern, role)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return Rule(pattern, role, course, compile_pattern(pattern))


def trust_problem(pattern, role):
    """Why a rule of ``role`` with ``pattern`` would trust more than one namespace or authority, else None.

    An admin rule may have no ``*`` at all. An instructor rule may have none in what decides who
    asserts it: an entitlement's namespace (the segments before ``:group:`` of a ``urn:``) and its
    ``#authority``. Learner rules may use ``*`` (within one segment)."""
    if "*" not in pattern or role == "learner":
        return None
    example = "urn:geant:<your namespace>:group:<group>#<your authority>"
    if role == "admin":
        return (
            f"the admin rule {pattern!r} has a wildcard (*), so it matches values of more than one namespace or "
            f"authority: anyone whose identity provider asserts such a value would be an admin. Name the exact "
            f"value you trust, e.g. {example}"
        )
    head, _, authority = pattern.partition("#")
    namespace = head.partition(":group:")[0] if head.startswith("urn:") and ":group:" in head else ""
    if "*" in namespace or "*" in authority:
        where = "namespace" if "*" in namespace else "authority"
        return (
            f"the instructor rule {pattern!r} has a wildcard (*) in its {where}, so values from namespaces or "
            f"authorities you do not control would make instructors. Name them, e.g. {example}"
        )
    return None


def parse_rules(specs, where="course_rules"):
    if not isinstance(specs, (list, tuple)):
        raise ValueError(f"{where} must be a list of rules, got {type(specs).__name__}")
    return [parse_rule(spec, f"{where}[{i}]") for i, spec in enumerate(specs)]


@dataclass
class Grants:
    """What someone's claims give them: ``{course: learner|instructor}`` and admin rights."""

    courses: dict = field(default_factory=dict)
    admin: bool = False

    def to_dict(self):
        return {"courses": dict(sorted(self.courses.items())), "admin": self.admin}


def claim_values(claims, key):
    """The values of claim ``key`` (dotted for nested claims) as a list of strings."""
    value = claims
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set)):
        return [v for v in value if isinstance(v, str)]
    return []


def grants_from(values, rules):
    grants = Grants()
    for value in values:
        for rule in rules:
            course = rule.match(value)
            if course is None:
                continue
            if rule.role == "admin":
                grants.admin = True
            elif grants.courses.get(course) != "instructor":
                grants.courses[course] = rule.role
            break  # the first rule that matches a value decides what it grants
    return grants
