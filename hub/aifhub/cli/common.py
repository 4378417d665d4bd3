"""Options and helpers shared by the CLI's commands."""

import argparse
import json
import os
import sys
from pathlib import Path

import requests


class CLIError(Exception):
    """A failure to report as one clear line and exit status 1 (2 for usage)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def state_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--state-dir", default=os.environ.get("AIFHUB_STATE_DIR", ".aifhub"),
                   help="aifhub's state directory (default: .aifhub)")
    p.add_argument("--courses", default="courses", help="directory of course folders (default: courses)")
    p.add_argument("--url", default=os.environ.get("AIFHUB_URL"),
                   help="act on a running hub at URL (e.g. http://127.0.0.1:8000) with the token in $AIFHUB_TOKEN")
    return p


def json_option():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def images_dir_for(courses_dir):
    candidate = Path(courses_dir).resolve().parent / "sandbox_images"
    return candidate if candidate.is_dir() else Path("sandbox_images").resolve()


def print_json(data):
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    for row in rows:
        print(line.format(*(str(v) for v in row)))


def service_api(url, method, path, body=None, raw=False):
    """Call the running service's API at ``url`` with ``$AIFHUB_TOKEN``."""
    token = os.environ.get("AIFHUB_TOKEN") or os.environ.get("AIFHUB_ADMIN_TOKEN")
    if not token:
        raise CLIError("--url needs an API token in $AIFHUB_TOKEN (a JupyterHub token of yours)", status=2)
    full = url.rstrip("/") + "/services/aifhub/api/v1/" + path
    try:
        resp = requests.request(method, full, json=body, headers={"Authorization": f"token {token}"}, timeout=30)
    except requests.RequestException as exc:
        raise CLIError(f"cannot reach {url}: {exc}")
    if raw and resp.status_code < 400:
        return resp.text
    try:
        data = resp.json()
    except ValueError:
        data = {"message": resp.text[:300]}
    if resp.status_code >= 400:
        raise CLIError(f"{method} {full}: {resp.status_code} {data.get('message', '')}")
    return data
