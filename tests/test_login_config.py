"""The login's pure parts: user names from claims, claim rules, the --auth-config file, and `aifhub up`'s
refusals (tables of cases; no hub)."""

import subprocess
import sys

import pytest

from aifhub.auth import names
from aifhub.auth.claims import DEFAULT_RULES, grants_from, parse_rules
from aifhub.auth.config import AuthConfigError, load


@pytest.mark.parametrize(
    "value, style, expected",
    [
        ("ana@dex.test", "hashed", r"ana-[a-z2-7]{12}"),
        ("28c5353b8bb34984a8bd4169ba94c606@myaccessid.org", "hashed", r"28c5353b8bb34984a8bd-[a-z2-7]{12}"),
        ("CiQwOGE4Njg0Yi1kYjg4LTRi", "hashed", r"ciqwoge4njg0yi1kyjg4-[a-z2-7]{12}"),
        ("../../etc/passwd", "hashed", r"etc-passwd-[a-z2-7]{12}"),
        ("Ünïcode Nàme", "hashed", r"n-code-n-me-[a-z2-7]{12}"),
        ("!!!", "hashed", r"user-[a-z2-7]{12}"),
        ("jdoe", "claim", r"jdoe"),
        ("j.doe@uni.example", "claim", r"j\.doe@uni\.example"),
    ],
)
def test_user_names(value, style, expected):
    import re

    assert re.fullmatch(expected, names.username_for(value, style, "https://idp.example"))


@pytest.mark.parametrize("value", ["JDoe", "j doe", "../x", "", "a" * 65])
def test_claim_style_refuses_what_it_would_have_to_change(value):
    with pytest.raises(names.UnusableName):
        names.username_for(value, "claim")


def test_hashed_names_are_stable_and_never_collide_where_sanitising_would():
    # these all sanitise to the same readable part; the digest keeps them apart, per issuer too
    values = ["a.b@x", "a-b@x", "A.B@x", "a_b@x", "a b@x"]
    got = {names.username_for(v, "hashed", "https://idp.example") for v in values}
    assert len(got) == len(values)
    assert names.username_for("a.b@x", "hashed", "https://idp.example") == names.username_for(
        "a.b@x", "hashed", "https://idp.example"
    )
    assert names.username_for("a.b@x", "hashed", "https://other.example") not in got
    assert names.username_for("A.B@x", "hashed", "i", casefold=True) == names.username_for("a.b@x", "hashed", "i")


TRUSTED = "urn:geant:myaccessid.org:group:aifhub:{}#aai.example"
RULES = [
    {"pattern": TRUSTED.format("admins"), "role": "admin"},
    {"pattern": TRUSTED.format("{course}:role=instructor"), "role": "instructor"},
    {"pattern": "urn:geant:myaccessid.org:group:aifhub:{course}#*", "role": "learner"},
]


def test_no_default_rule_grants_anything():
    values = [TRUSTED.format("admins"), TRUSTED.format("dl-basics:role=instructor"), TRUSTED.format("dl-basics")]
    assert DEFAULT_RULES == [] and grants_from(values, parse_rules(DEFAULT_RULES)).to_dict() == {
        "courses": {},
        "admin": False,
    }


@pytest.mark.parametrize(
    "values, courses, admin",
    [
        (
            ["urn:geant:myaccessid.org:group:aifhub:gpu-fundamentals#aai.example"],
            {"gpu-fundamentals": "learner"},
            False,
        ),
        (
            [
                "urn:geant:myaccessid.org:group:aifhub:gpu-fundamentals:role=instructor#aai.example",
                "urn:geant:myaccessid.org:group:aifhub:gpu-fundamentals#aai.example",
            ],
            {"gpu-fundamentals": "instructor"},
            False,
        ),
        (["urn:geant:myaccessid.org:group:aifhub:admins#aai.example"], {}, True),
        (
            ["urn:geant:myaccessid.org:group:aifhub:Bad_Course#x", "urn:geant:x:group:other:dl-basics#x", "aifhub"],
            {},
            False,
        ),
        (["urn:geant:myaccessid.org:group:aifhub:dl-basics:role=member#x"], {}, False),
        # another namespace or authority asserting the same groups gets nothing
        (["urn:geant:evil.example:group:aifhub:admins#aai.example"], {}, False),
        # (the learner rule takes any authority: a course named "admins" at most, never admin rights)
        (["urn:geant:myaccessid.org:group:aifhub:admins#evil.example"], {"admins": "learner"}, False),
        (["urn:geant:evil.example:group:aifhub:dl-basics:role=instructor#aai.example"], {}, False),
        # a wildcard stays within its segment: the learner rule's authority cannot swallow more segments
        (["urn:geant:myaccessid.org:group:aifhub:dl-basics#x:group:aifhub:admins#aai.example"], {}, False),
        (["urn:geant:myaccessid.org:group:aifhub:dl-basics#other.example"], {"dl-basics": "learner"}, False),
    ],
)
def test_rules_that_name_their_namespace_and_authority(values, courses, admin):
    grants = grants_from(values, parse_rules(RULES))
    assert grants.courses == courses and grants.admin == admin


def test_rule_with_a_named_course_and_plain_groups():
    rules = parse_rules(
        [
            {"pattern": "ws-gpu-2026", "role": "learner", "course": "gpu-fundamentals"},
            {"pattern": "{course}-teachers", "role": "instructor"},
        ]
    )
    assert grants_from(["ws-gpu-2026", "dl-basics-teachers"], rules).courses == {
        "gpu-fundamentals": "learner",
        "dl-basics": "instructor",
    }


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"pattern": "x", "role": "learner"}, "has no {course}"),
        ({"pattern": "{course}", "role": "boss"}, "role of"),
        ({"pattern": "{course}:{course}", "role": "learner"}, "more than once"),
        ({"pattern": "admins", "role": "admin", "course": "x"}, "may name no course"),
        ({"pattern": "g", "role": "learner", "course": "Not A Course"}, "is not a course id"),
        ({"pattern": "g", "role": "learner", "course": "c", "extra": 1}, "unknown key"),
        ("just-a-string", "must be a mapping"),
        ({"pattern": "urn:geant:*:group:aifhub:admins#*", "role": "admin"}, "admin rule .* has a wildcard"),
        ({"pattern": "urn:geant:ns.example:group:aifhub:admins#*", "role": "admin"}, "admin rule"),
        ({"pattern": "aifhub-*", "role": "admin"}, "admin rule"),
        ({"pattern": "urn:geant:*:group:aifhub:{course}:role=instructor#a", "role": "instructor"}, "in its namespace"),
        ({"pattern": "urn:geant:ns:group:aifhub:{course}:role=instructor#*", "role": "instructor"}, "in its authority"),
    ],
)
def test_bad_rules_say_what_is_wrong(rule, message):
    with pytest.raises(ValueError, match=message):
        parse_rules([rule])


@pytest.mark.parametrize(
    "text, message",
    [
        ("oidc: [1, 2]", "needs a 'oidc:' section"),
        ("ldap: {x: 1}", "unknown section"),
        ("oidc: {issuer: https://x, clientid: y}", "oidc.clientid is not a setting"),
        ("oidc: {issuer: [", "not valid YAML"),
    ],
)
def test_bad_login_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "login.yaml"
    path.write_text(text)
    with pytest.raises(AuthConfigError, match=message):
        load(path, "oidc")


def test_login_file_paths_are_relative_to_it(tmp_path):
    path = tmp_path / "login.yaml"
    path.write_text("oidc: {issuer: 'https://idp.example', client_secret_file: secret, allow: any}\n")
    hub, service = load(path, "oidc")
    assert hub == {"issuer": "https://idp.example", "client_secret_file": str(tmp_path / "secret"), "allow": "any"}
    assert service == {}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ip", "0.0.0.0"], "demo login lets anyone in"),
        (["--auth", "oidc"], "needs --auth-config FILE"),
        (["--auth-config", "x.yaml"], "--auth-config is for --auth oidc or lti13"),
        (["--auth", "oidc", "--auth-config", "/nonexistent/login.yaml"], "cannot be read"),
        (["--auth", "oidc", "--auth-config", "WILDCARD_ADMIN"], "admin rule 'urn:geant:*:group:aifhub:admins#x'"),
    ],
)
def test_aifhub_up_refuses(tmp_path, args, message):
    if "WILDCARD_ADMIN" in args:  # the old default admin rule: any namespace of the federation
        login = tmp_path / "login.yaml"
        login.write_text(
            "oidc:\n  issuer: https://idp.example\n  course_rules:\n"
            "    - {pattern: 'urn:geant:*:group:aifhub:admins#x', role: admin}\n"
        )
        args = [str(login) if a == "WILDCARD_ADMIN" else a for a in args]
    out = subprocess.run(
        [sys.executable, "-m", "aifhub", "up", "--state-dir", str(tmp_path / "s"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and message in out.stderr, out.stderr


# -- what logins grant, in a real (SQLite) state database ------------------------------------------


@pytest.fixture
def db(tmp_path):
    from aifhub.state.db import Database, sqlite_url

    database = Database(sqlite_url(tmp_path / "state.sqlite"))
    yield database
    database.close()


def rows(db):
    from aifhub.auth.models import CourseStaff
    from aifhub.ledger.models import Enrollment

    def read(s):
        learners = {(e.user, e.course_id, e.source) for e in s.query(Enrollment)}
        staff = {(c.user, c.course_id, c.source) for c in s.query(CourseStaff)}
        return learners, staff

    return db.call(read)


def test_grants_follow_the_claims_and_leave_other_sources_alone(db):
    from aifhub.auth.grants import apply_grants
    from aifhub.ledger.models import Enrollment

    db.call(lambda s: s.add(Enrollment(user="ana", course_id="mooc", source="open")))
    assert db.call(apply_grants, "ana", "oidc", {"ws": "learner", "mooc": "learner", "lab": "instructor"}) == {
        "ws",
        "lab",
    }
    assert rows(db) == ({("ana", "mooc", "open"), ("ana", "ws", "oidc")}, {("ana", "lab", "oidc")})
    # the claims drop ws and lab: both revoked; the open enrolment stays; nothing changes when repeated
    assert db.call(apply_grants, "ana", "oidc", {"mooc": "learner"}) == {"ws", "lab"}
    assert db.call(apply_grants, "ana", "oidc", {"mooc": "learner"}) == set()
    assert rows(db) == ({("ana", "mooc", "open")}, set())
    # an LTI launch speaks for its own course only
    db.call(apply_grants, "ana", "lti", {"ws": "instructor"}, {"ws"})
    db.call(apply_grants, "ana", "lti", {"lab": "learner"}, {"lab"})
    assert rows(db) == ({("ana", "mooc", "open"), ("ana", "lab", "lti")}, {("ana", "ws", "lti")})


def test_an_nrps_roster_adds_members_and_removes_those_who_left(db):
    from aifhub.lti.roster import apply_roster

    assert db.call(apply_roster, "ws", {"lea": "learner", "leo": "learner", "ines": "instructor"})
    assert rows(db) == ({("lea", "ws", "lti"), ("leo", "ws", "lti")}, {("ines", "ws", "lti")})
    assert db.call(apply_roster, "ws", {"lea": "learner", "ines": "learner"})  # leo left, ines is a learner now
    assert rows(db) == ({("lea", "ws", "lti"), ("ines", "ws", "lti")}, set())
    assert not db.call(apply_roster, "ws", {"lea": "learner", "ines": "learner"})


def test_passback_backoff_doubles_up_to_its_cap_and_then_fails(db):
    from aifhub.lti.models import LtiLink, LtiScore
    from aifhub.lti.passback import _attempt_failed

    def add(s):
        link = LtiLink(issuer="i", client_id="c", deployment_id="1", context_id="x", course_id="ws")
        s.add(link)
        s.flush()
        row = LtiScore(
            link_id=link.id,
            assignment_id="a",
            user="lea",
            lti_user_id="u",
            score=1,
            max_score=2,
            graded_at="t",
            fingerprint="1/2@t",
        )
        s.add(row)
        s.flush()
        return row.id

    score = db.call(add)
    delays = [db.call(_attempt_failed, score, "down", True, 5, 2.0, 5.0)[3] for _ in range(5)]
    assert delays == [2.0, 4.0, 5.0, 5.0, None]  # the fifth failure is the last attempt
    assert db.call(lambda s: s.get(LtiScore, score).state) == "failed"
