"""The platform's LTI Advantage services as a tool calls them: an OAuth2 client-credentials token
(signed client assertion), AGS line items and scores, NRPS memberships. Async (tornado), bounded by
timeouts; errors say whether trying again may help."""

import json
import re
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

SCOPE_LINEITEM = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCOPE_NRPS = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
LINEITEM = "application/vnd.ims.lis.v2.lineitem+json"
LINEITEMS = "application/vnd.ims.lis.v2.lineitemcontainer+json"
SCORE = "application/vnd.ims.lis.v1.score+json"
MEMBERSHIPS = "application/vnd.ims.lti-nrps.v2.membershipcontainer+json"
NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class PlatformError(Exception):
    def __init__(self, message, retryable=True):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def scores_url(lineitem_url):
    """AGS: the scores endpoint is the line item URL's path with ``/scores`` appended (query kept)."""
    parts = urlsplit(lineitem_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/scores"))


class PlatformClient:
    def __init__(self, token_url, client_id, keys, timeout=20):
        self.token_url = token_url
        self.client_id = client_id
        self.keys = keys
        self.timeout = timeout
        self._tokens = {}  # scopes -> (token, expires at)

    async def _fetch(self, req):
        try:
            return await AsyncHTTPClient().fetch(req, raise_error=False)
        except OSError as exc:
            raise PlatformError(f"the platform is not reachable ({exc.strerror or exc})") from exc

    async def token(self, scopes):
        key = " ".join(sorted(scopes))
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic() + 30:
            return cached[0]
        body = urlencode(
            {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": self.keys.client_assertion(self.client_id, self.token_url),
                "scope": key,
            }
        )
        resp = await self._fetch(
            HTTPRequest(
                self.token_url,
                method="POST",
                body=body,
                request_timeout=self.timeout,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        )
        if resp.code != 200:
            raise PlatformError(
                f"the platform's token endpoint answered {resp.code}: {resp.body[:200]!r}",
                retryable=resp.code >= 500 or resp.code in (408, 429) or resp.code == 599,
            )
        answer = json.loads(resp.body)
        self._tokens[key] = (answer["access_token"], time.monotonic() + float(answer.get("expires_in", 3600)))
        return answer["access_token"]

    async def call(self, method, url, scopes, body=None, accept="application/json", content_type=None):
        """``(json or None, headers)``; a 401 gets a fresh token once."""
        for attempt in (0, 1):
            token = await self.token(scopes)
            headers = {"Authorization": f"Bearer {token}", "Accept": accept}
            if content_type:
                headers["Content-Type"] = content_type
            resp = await self._fetch(
                HTTPRequest(
                    url,
                    method=method,
                    headers=headers,
                    request_timeout=self.timeout,
                    body=None if body is None else json.dumps(body),
                )
            )
            if resp.code == 401 and attempt == 0:
                self._tokens.pop(" ".join(sorted(scopes)), None)
                continue
            if resp.code >= 300:
                raise PlatformError(
                    f"{method} {url} answered {resp.code}: {resp.body[:200]!r}",
                    retryable=resp.code >= 500 or resp.code in (401, 408, 429) or resp.code == 599,
                )
            data = json.loads(resp.body) if resp.body else None
            return data, resp.headers

    async def members(self, memberships_url):
        """Every member of the context (NRPS, following ``Link: rel=next`` pages)."""
        url, members, pages = memberships_url, [], 0
        while url and pages < 1000:
            data, headers = await self.call("GET", url, [SCOPE_NRPS], accept=MEMBERSHIPS)
            members.extend((data or {}).get("members") or [])
            match = NEXT_LINK.search(headers.get("Link", ""))
            url, pages = (match.group(1) if match else None), pages + 1
        return members

    async def find_lineitem(self, lineitems_url, resource_id):
        sep = "&" if "?" in lineitems_url else "?"
        data, _ = await self.call(
            "GET", f"{lineitems_url}{sep}{urlencode({'resource_id': resource_id})}", [SCOPE_LINEITEM], accept=LINEITEMS
        )
        items = data if isinstance(data, list) else (data or {}).get("lineitems") or (data or {}).get("content") or []
        for item in items:
            if item.get("resourceId") == resource_id and item.get("id"):
                return item["id"]
        return None

    async def create_lineitem(self, lineitems_url, item):
        data, _ = await self.call(
            "POST", lineitems_url, [SCOPE_LINEITEM], body=item, accept=LINEITEM, content_type=LINEITEM
        )
        if not (data or {}).get("id"):
            raise PlatformError(f"the platform created a line item without an id: {data!r}", retryable=False)
        return data["id"]

    async def post_score(self, lineitem_url, score):
        await self.call("POST", scores_url(lineitem_url), [SCOPE_SCORE], body=score, content_type=SCORE)
