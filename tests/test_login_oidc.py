"""OIDC login through a real provider (Dex, built from its Go module) and a real hub (``aifhub up
--auth oidc``): claims → course roles (entitlements enrol learners and make instructors), entitlements
from namespaces and authorities the hub does not trust grant nothing, a refused user sees why once and
can switch account, people's names stand beside their opaque ids, an expired provider token ends the
session, logout; in the browser (Playwright) and through the authorisation-code flow with plain HTTP."""

import re
from pathlib import Path
import time
from html import unescape
from urllib.parse import urljoin

import pytest
import requests
import yaml

import browser
from aifhub.auth.names import username_for
from hubrunner import RunningHub, copy_courses, free_port
from oidcprovider import CLIENT_ID, CLIENT_SECRET, Dex, dex_binary, dex_sub

DEX = dex_binary()
pytestmark = pytest.mark.skipif(isinstance(DEX, str) and DEX.startswith("skip:"), reason=str(DEX)[5:])

CPU_COURSE = "dl-basics"  # open to all: a sandbox without a GPU
COURSE = "gpu-fundamentals"  # a roster workshop: ana is not on its course.yaml roster, her entitlement enrols her
PASSWORD = "dex-password"
TOKEN_EXPIRY_S = 20
ENTITLEMENT = "urn:geant:dex.test:group:aifhub:{}#dex.test"
RULES = [  # as docs/login.md has them: the namespace and authority this hub trusts, named
    {"pattern": ENTITLEMENT.format("admins"), "role": "admin"},
    {"pattern": ENTITLEMENT.format("{course}:role=instructor"), "role": "instructor"},
    {"pattern": ENTITLEMENT.format("{course}"), "role": "learner"},
]
USERS = [  # username: the name claim Dex gives; the user names come from sub (opaque), as in docs/login.md
    {
        "id": "ana",
        "username": "Ana Novak",
        "email": "ana@dex.test",
        "groups": [ENTITLEMENT.format(COURSE), "unrelated"],
    },
    {
        "id": "ivo",
        "username": "Ivo Horvat",
        "email": "ivo@dex.test",
        "groups": [ENTITLEMENT.format(COURSE + ":role=instructor")],
    },
    {"id": "ada", "username": "Ada Admin", "email": "ada@dex.test", "groups": [ENTITLEMENT.format("admins")]},
    {
        "id": "rex",
        "username": "Rex",
        "email": "rex@dex.test",
        "groups": ["urn:geant:dex.test:group:other-project#dex.test"],
    },
    {  # a member of the federation whose home IdP (or another community) asserts aifhub's admin group
        "id": "eve",
        "username": "Eve Outsider",
        "email": "eve@dex.test",
        "groups": [
            ENTITLEMENT.format(COURSE),
            "urn:geant:evil.example:group:aifhub:admins#dex.test",
            "urn:geant:dex.test:group:aifhub:admins#evil.example",
            "urn:geant:evil.example:group:aifhub:gpu-fundamentals:role=instructor#evil.example",
            "urn:geant:dex.test:group:aifhub:gpu-fundamentals#x:group:aifhub:admins#dex.test",
        ],
    },
]


@pytest.fixture(scope="module")
def stack(hub_dir):
    port = free_port()
    dex = Dex(
        DEX,
        hub_dir / "dex",
        [u | {"password": PASSWORD} for u in USERS],
        f"http://127.0.0.1:{port}/hub/oauth_callback",
        token_expiry=f"{TOKEN_EXPIRY_S}s",
    ).start()
    (hub_dir / "client-secret").write_text(CLIENT_SECRET + "\n")
    (hub_dir / "login.yaml").write_text(
        yaml.safe_dump(
            {
                "oidc": {
                    "issuer": dex.issuer,
                    "client_id": CLIENT_ID,
                    "client_secret_file": "client-secret",
                    "scope": ["openid", "profile", "email", "groups"],
                    "username_claim": "sub",
                    "groups_claim": "groups",
                    "course_rules": RULES,
                    "login_service": "Dex",
                    "auth_refresh_age": 3,
                }
            }
        )
    )
    images = hub_dir / "sandbox_images"
    images.symlink_to(Path(__file__).resolve().parent.parent / "sandbox_images")
    hub = RunningHub(
        hub_dir / "state",
        copy_courses(hub_dir / "courses"),
        log_path=hub_dir / "aifhub-up.log",
        extra_args=["--auth", "oidc", "--auth-config", str(hub_dir / "login.yaml")],
    )
    hub.port, hub.url = port, f"http://127.0.0.1:{port}"
    hub.args[hub.args.index("--port") + 1] = str(port)
    hub.start()
    yield hub, dex
    hub.stop()
    dex.stop()


def name_of(email, dex):
    """The (opaque) user name of the Dex user with this e-mail address: from their sub claim."""
    user = next(u for u in USERS if u["email"] == email)
    return username_for(dex_sub(user["id"]), "hashed", dex.issuer)


def code_flow_login(hub, email):
    """Log in with plain HTTP through the authorisation-code flow: hub → Dex's form → hub's callback."""
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/oauth_login?next=/hub/home", timeout=30)
    form = re.search(r'<form[^>]*action="([^"]+)"', r.text)
    assert form and "/dex/auth/local" in r.url, f"expected Dex's login form, got {r.url}"
    r = s.post(urljoin(r.url, unescape(form.group(1))), data={"login": email, "password": PASSWORD}, timeout=30)
    return s, r


def test_code_flow_enrols_a_learner_from_her_entitlement(stack):
    hub, dex = stack
    s, r = code_flow_login(hub, "ana@dex.test")
    ana = name_of("ana@dex.test", dex)
    assert r.status_code == 200 and r.url == f"{hub.url}/hub/home", (r.status_code, r.url)
    assert re.fullmatch(r"[a-z0-9-]{1,20}-[a-z2-7]{12}", ana) and "ana" not in ana and ana in r.text  # opaque
    # the entitlement enrolled her: the roster shows why, the hub's learner group holds her, her home lists it
    roster = {e["user"]: e["how"] for e in hub.service("GET", f"courses/{COURSE}/roster").json()["roster"]}
    assert roster.get(ana) == "enrolled (oidc)", roster
    assert ana in hub.api("GET", f"groups/nbgrader-{COURSE}").json()["users"]
    assert ana not in hub.api("GET", f"groups/formgrade-{COURSE}").json()["users"]
    home = s.get(f"{hub.url}/services/aifhub/", timeout=30)
    assert home.status_code == 200 and "GPU Programming Fundamentals" in home.text
    me = s.get(f"{hub.url}/services/aifhub/api/v1/me", timeout=30).json()
    assert [c["id"] for c in me["courses"] if c["enrolled"]] == [COURSE], me


def test_code_flow_makes_an_instructor_and_an_admin(stack):
    hub, dex = stack
    s, r = code_flow_login(hub, "ivo@dex.test")
    ivo = name_of("ivo@dex.test", dex)
    assert r.status_code == 200, r.text[:500]
    assert ivo in hub.api("GET", f"groups/formgrade-{COURSE}").json()["users"]
    page = s.get(f"{hub.url}/services/aifhub/courses/{COURSE}", timeout=30)
    assert page.status_code == 200 and "Roster" in page.text, page.text[:500]  # the instructor's view
    assert hub.api("GET", f"users/{ivo}").json()["admin"] is False
    s, r = code_flow_login(hub, "ada@dex.test")
    assert hub.api("GET", f"users/{name_of('ada@dex.test', dex)}").json()["admin"] is True
    assert s.get(f"{hub.url}/services/aifhub/admin", timeout=30).status_code == 200


def test_entitlements_from_other_namespaces_or_authorities_grant_nothing(stack):
    """#23: the old default rules made anyone an admin whose IdP asserted urn:geant:<any>:group:aifhub:admins#<any>."""
    hub, dex = stack
    s, r = code_flow_login(hub, "eve@dex.test")
    eve = name_of("eve@dex.test", dex)
    assert r.status_code == 200, r.text[:500]  # her trusted learner entitlement lets her in, as a learner only
    assert hub.api("GET", f"users/{eve}").json()["admin"] is False
    assert s.get(f"{hub.url}/services/aifhub/admin", timeout=30).status_code == 403
    assert eve not in hub.api("GET", f"groups/formgrade-{COURSE}").json()["users"]
    roster = {e["user"]: e["how"] for e in hub.service("GET", f"courses/{COURSE}/roster").json()["roster"]}
    assert roster.get(eve) == "enrolled (oidc)", roster


def test_a_user_without_entitlement_is_refused_once_with_a_way_to_switch_account(stack):
    hub, dex = stack
    _, r = code_flow_login(hub, "rex@dex.test")
    assert r.status_code == 403 and "not entitled to any course" in r.text, (r.status_code, r.text[:800])
    assert r.text.count("not entitled to any course") == 1, r.text  # the message once, not as heading and text
    assert re.search(r"<h1>\s*403 : Forbidden\s*</h1>", r.text), r.text[:800]
    switch = re.search(r'<a id="switch-account"[^>]*href="([^"]+)"', r.text)
    assert switch and switch.group(1) == "/hub/logout" and "sign in with another account" in r.text
    assert hub.api("GET", f"users/{name_of('rex@dex.test', dex)}").status_code == 404  # no account was made


def test_people_are_shown_by_name_beside_their_opaque_ids(stack):
    """#30: with username_claim: sub every user name is opaque; the name and e-mail claims stand beside it
    on the roster (page and REST) and in the usage table and CSV."""
    hub, dex = stack
    code_flow_login(hub, "ana@dex.test")
    teacher, _ = code_flow_login(hub, "ivo@dex.test")
    ana = name_of("ana@dex.test", dex)
    entry = next(e for e in hub.service("GET", f"courses/{COURSE}/roster").json()["roster"] if e["user"] == ana)
    assert (entry["name"], entry["email"]) == ("Ana Novak", "ana@dex.test"), entry
    page = teacher.get(f"{hub.url}/services/aifhub/courses/{COURSE}", timeout=30).text
    roster = page[page.index('id="roster"') :]
    roster = roster[: roster.index("</table>")]
    assert "Ana Novak" in roster and "&lt;ana@dex.test&gt;" in roster and ana in roster, roster[:2000]
    # usage: a sandbox of hers (in the CPU course), then its usage table and CSV, as an admin reads them
    r = hub.api("POST", f"users/{ana}/server", json={"course": CPU_COURSE})
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(ana)
    hub.stop_server(ana)
    admin, _ = code_flow_login(hub, "ada@dex.test")
    csv_text = hub.service("GET", f"usage?format=csv&course={CPU_COURSE}").text  # REST, with an admin's token
    header, *rows = csv_text.splitlines()
    assert header.split(",")[:2] == ["session", "user"] and header.split(",")[-2:] == ["name", "email"], header
    assert any(f",{ana}," in row and row.endswith(",Ana Novak,ana@dex.test") for row in rows), csv_text
    page = admin.get(f"{hub.url}/services/aifhub/courses/{CPU_COURSE}", timeout=30).text
    usage = page[page.index('id="usage"') :]
    usage = usage[: usage.index("</table>")]
    assert "Ana Novak" in usage and ana in usage, usage[:2000]


WHY_NOT = browser.unavailable()
needs_browser = pytest.mark.skipif(WHY_NOT is not None, reason=f"needs a browser: {WHY_NOT}")


def browser_login(context, hub, email):
    page = context.new_page()
    page.goto(f"{hub.url}/hub/login?next=%2Fservices%2Faifhub%2F")
    page.locator("a[href*=oauth_login]", has_text="Sign in with Dex").click()
    page.wait_for_url(re.compile(r"/dex/auth"))
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("button[type=submit], #submit-login").first.click()
    return page


@needs_browser
def test_browser_login_refusal_logout_and_expiry(stack):
    from playwright.sync_api import sync_playwright

    hub, dex = stack
    with sync_playwright() as p:
        chromium = browser.launch(p)
        try:
            context = chromium.new_context()
            page = browser_login(context, hub, "ivo@dex.test")
            page.wait_for_url(f"{hub.url}/services/aifhub/")
            assert "GPU Programming Fundamentals" in page.content()
            browser.screenshot(page, "oidc-instructor-home")
            page.goto(f"{hub.url}/hub/logout")
            page.goto(f"{hub.url}/hub/home")
            assert "/hub/login" in page.url  # logged out: the hub asks who you are again

            refused = browser_login(chromium.new_context(), hub, "rex@dex.test")
            refused.wait_for_load_state()
            assert "not entitled to any course" in refused.content()
            refused.locator("#switch-account").click()  # log out, and back to the login page: another account
            refused.wait_for_url(re.compile(r"/hub/login|/dex/"))
            browser.screenshot(refused, "oidc-refused")

            page = browser_login(chromium.new_context(), hub, "ana@dex.test")
            page.wait_for_url(f"{hub.url}/services/aifhub/")
            logged_in_at = time.monotonic()
            page.goto(f"{hub.url}/hub/home")
            assert "/hub/home" in page.url
            time.sleep(max(0.0, TOKEN_EXPIRY_S + 4 - (time.monotonic() - logged_in_at)))
            page.goto(f"{hub.url}/hub/home")  # the provider's token expired: the hub's refresh fails
            assert "/hub/login" in page.url or "/dex/auth" in page.url, page.url
        finally:
            chromium.close()
