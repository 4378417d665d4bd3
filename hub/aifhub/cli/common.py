"""Options and helpers shared by the CLI's commands."""

import argparse
import json
import os
import sys
from pathlib import Path

import requests

from ..runstate import CLI_TOKEN_FILE


class CLIError(Exception):
    """A failure to report as one clear line and exit status 1 (2 for usage)."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def state_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--state-dir",
        default=os.environ.get("AIFHUB_STATE_DIR", ".aifhub"),
        help="aifhub's state directory (default: .aifhub)",
    )
    p.add_argument("--courses", default="courses", help="directory of course folders (default: courses)")
    p.add_argument(
        "--url",
        default=os.environ.get("AIFHUB_URL"),
        help="act on a running hub at URL (e.g. http://127.0.0.1:8000) with the token in $AIFHUB_TOKEN",
    )
    return p


def json_option():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def print_json(data):
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows, headers):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    for row in rows:
        print(line.format(*(str(v) for v in row)))


HOW_TO_GET_A_TOKEN = (
    "a JupyterHub token of yours in $AIFHUB_TOKEN: log in to the hub, open Token "
    "(<hub URL>/hub/token), request one and `export AIFHUB_TOKEN=<it>`; an instructor's token acts "
    "on their own courses, an admin's on all"
)


def env_token():
    return os.environ.get("AIFHUB_TOKEN") or os.environ.get("AIFHUB_ADMIN_TOKEN") or None


def local_token(state_dir):
    """The token for the hub that `aifhub up` runs on ``state_dir``: $AIFHUB_TOKEN when given, else the one the hub
    keeps for this machine's own CLI (readable only by whoever runs `aifhub up`)."""
    token = env_token()
    if token:
        return token
    path = Path(state_dir) / CLI_TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise CLIError(
            f"no token of the hub on {state_dir} ({path} is missing: it is made when `aifhub up` starts); "
            f"start the hub, or pass --url URL with {HOW_TO_GET_A_TOKEN}",
            status=2,
        )
    except PermissionError:
        raise CLIError(
            f"cannot read {path}: run this as the user who runs `aifhub up`, or give {HOW_TO_GET_A_TOKEN}", status=2
        )


def service_api(url, method, path, body=None, raw=False, token=None):
    """Call the running service's API at ``url`` with ``token`` (default ``$AIFHUB_TOKEN``)."""
    token = token or env_token()
    if not token:
        raise CLIError(f"--url needs {HOW_TO_GET_A_TOKEN}", status=2)
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
