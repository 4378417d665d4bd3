"""OIDC login through a real provider (Dex, built from its Go module) and a real hub (``aifhub up
--auth oidc``): claims → course roles (entitlements enrol learners and make instructors), a refused
user sees why, an expired provider token ends the session, logout; in the browser (Playwright) and
through the authorisation-code flow with plain HTTP."""

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
from oidcprovider import CLIENT_ID, CLIENT_SECRET, Dex, dex_binary

DEX = dex_binary()
pytestmark = pytest.mark.skipif(isinstance(DEX, str) and DEX.startswith("skip:"), reason=str(DEX)[5:])

COURSE = "gpu-fundamentals"  # a roster workshop: ana is not on its course.yaml roster, her entitlement enrols her
PASSWORD = "dex-password"
TOKEN_EXPIRY_S = 20
ENTITLEMENT = "urn:geant:dex.test:group:aifhub:{}#dex.test"
USERS = [
    {"username": "ana", "email": "ana@dex.test", "groups": [ENTITLEMENT.format(COURSE), "unrelated"]},
    {"username": "ivo", "email": "ivo@dex.test", "groups": [ENTITLEMENT.format(COURSE + ":role=instructor")]},
    {"username": "ada", "email": "ada@dex.test", "groups": [ENTITLEMENT.format("admins")]},
    {"username": "rex", "email": "rex@dex.test", "groups": ["urn:geant:dex.test:group:other-project#dex.test"]},
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
                    "username_claim": "email",
                    "groups_claim": "groups",
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
    return username_for(email, "hashed", dex.issuer)


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
    assert re.fullmatch(r"ana-[a-z2-7]{12}", ana) and ana in r.text
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


def test_a_user_without_entitlement_is_refused_with_a_page_that_says_so(stack):
    hub, dex = stack
    _, r = code_flow_login(hub, "rex@dex.test")
    assert r.status_code == 403 and "not entitled to any course" in r.text, (r.status_code, r.text[:800])
    assert hub.api("GET", f"users/{name_of('rex@dex.test', dex)}").status_code == 404  # no account was made


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
