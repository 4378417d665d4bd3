"""The job side of a Slurm sandbox: ``python -m aifhub.sandboxside.slurm_job -- jupyterhub-singleuser ...``.

Runs inside the learner's Slurm job, as the learner (never as root):

1. the work folder ``$AIFHUB_SLURM_WORK`` is made (private to the learner) and the course's materials
   (``$AIFHUB_SLURM_MATERIALS``) copied in without overwriting the learner's files; the copy runs as the
   learner, so a link the learner planted only ever reaches what the learner may read anyway;
2. a free port is picked on the node and reported to the hub with the server's own token
   (``POST $JUPYTERHUB_API_URL/aifhub-slurm/address`` with ``{"server": name, "host", "port"}``);
   the hub accepts it only for the server that this very token belongs to (no port lands on another
   learner's spawn: batchspawner#127);
3. the single-user server is exec'd with ``JUPYTERHUB_SERVICE_URL`` pointing at that address.
"""

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

from .. import fsafe
from ..catalog.materials import is_private


def prepare(work, materials):
    """Create ``work`` (mode 0700) and copy ``materials`` into it, keeping what is there."""
    os.makedirs(os.path.dirname(work), mode=0o700, exist_ok=True)
    os.makedirs(work, mode=0o700, exist_ok=True)
    if materials and os.path.isdir(materials):
        with fsafe.opened(materials) as src, fsafe.opened(work) as dst:
            fsafe.copy_tree(src, dst, skip=is_private, existing="keep", dir_mode=0o700)


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def report(api_url, token, server, host, port, tries=10):
    """Tell the hub where the server will listen; retried while the hub restarts."""
    body = json.dumps({"server": server, "host": host, "port": port, "job": os.environ.get("SLURM_JOB_ID")})
    request = urllib.request.Request(
        api_url.rstrip("/") + "/aifhub-slurm/address",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise RuntimeError(f"the hub refused the address report: {exc.code} {exc.read()[:300]!r}") from exc
        except OSError:
            pass
        time.sleep(min(2**attempt, 10))
    raise RuntimeError("the hub did not take the address report")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not cmd:
        print("slurm_job: no command to run after --", file=sys.stderr)
        return 2
    env = os.environ
    work = env["AIFHUB_SLURM_WORK"]
    prepare(work, env.get("AIFHUB_SLURM_MATERIALS", ""))
    bind = env.get("AIFHUB_SLURM_BIND", "0.0.0.0")
    host = env.get("AIFHUB_SLURM_HOST") or socket.gethostname()
    port = free_port(bind)
    report(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"], env.get("JUPYTERHUB_SERVER_NAME", ""), host, port)
    env["JUPYTERHUB_SERVICE_URL"] = f"http://{bind}:{port}/"
    os.chdir(work)
    os.execvp(cmd[0], [*cmd, f"--ServerApp.root_dir={work}"])


if __name__ == "__main__":
    raise SystemExit(main())
