"""A small Kubernetes REST client for the test kubelet: plain dicts, requests, watches that resume.

The kubelet talks to the local control plane only, with a client certificate; tests use the
`kubernetes` client, which reads any kubeconfig.
"""

import json
import time

import requests

JSON = "application/json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class ApiError(RuntimeError):
    def __init__(self, status, body):
        self.status = status
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{status}: {message}")


class Api:
    def __init__(self, server, ca, cert, key, timeout=30):
        self.server = server.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # a CA bundle from the environment must not replace the cluster's CA
        self.session.verify = str(ca)
        self.session.cert = (str(cert), str(key))
        self.timeout = timeout

    def request(self, method, path, body=None, content_type=JSON, params=None, ok=(200, 201, 202)):
        headers = {"Accept": JSON}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        r = self.session.request(
            method, self.server + path, data=data, headers=headers, params=params, timeout=self.timeout
        )
        if r.status_code not in ok:
            raise ApiError(r.status_code, r.text)
        return r.json() if r.content else None

    def get(self, path, **params):
        return self.request("GET", path, params=params or None)

    def post(self, path, body):
        return self.request("POST", path, body)

    def put(self, path, body):
        return self.request("PUT", path, body)

    def patch(self, path, body, content_type=STRATEGIC):
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path, body=None):
        return self.request("DELETE", path, body)

    def watch(self, path, stop, **params):
        """Yield (type, object) for ``path`` (a list URL) forever: a list first (as ADDED), then a watch,
        resumed from the last resourceVersion; a 410 Gone lists again. Ends when ``stop`` is set."""
        version = None
        while not stop.is_set():
            try:
                if version is None:
                    listed = self.get(path, **params)
                    version = listed["metadata"]["resourceVersion"]
                    for item in listed.get("items", []):
                        yield "ADDED", item
                query = dict(
                    params, watch="1", resourceVersion=version, allowWatchBookmarks="true", timeoutSeconds="60"
                )
                with self.session.get(self.server + path, params=query, stream=True, timeout=(10, 90)) as r:
                    if r.status_code == 410:
                        version = None
                        continue
                    if r.status_code != 200:
                        raise ApiError(r.status_code, r.text)
                    for line in r.iter_lines():
                        if stop.is_set():
                            return
                        if not line:
                            continue
                        event = json.loads(line)
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                version = None
                            break
                        version = obj["metadata"].get("resourceVersion", version)
                        if kind != "BOOKMARK":
                            yield kind, obj
            except (requests.RequestException, ApiError, ValueError):
                if stop.is_set():
                    return
                time.sleep(1)
