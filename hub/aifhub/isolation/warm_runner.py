"""A warm sandbox: a single-user server process started before its learner is known.

Started by the service (as root, in the course's cgroup and bubblewrap namespace, with the course's
GPUs) ahead of a scheduled session, it imports the Jupyter stack, which is most of a server's start,
says ``ready`` on stdout and waits for one line on stdin: the learner it becomes
(``{"uid", "gid", "groups", "cwd", "env", "argv"}``). Then it drops to the learner's uid for good and
runs the single-user server in this same process. When its stdin closes first (the service stopped),
it exits.
"""

import json
import os
import sys

READY = "aifhub-warm-ready"
PRELOAD = (  # what jupyterhub-singleuser imports on its way to serving JupyterLab
    "jupyterhub.singleuser",
    "jupyter_server.serverapp",
    "jupyterlab",
    "jupyterlab.labapp",
    "jupyterlab_server",
    "notebook",
    "notebook.app",
    "jupyter_lsp",
    "jupyter_lsp.serverextension",
    "jupyter_server_terminals",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.formgrader",
    "jupyter_client.manager",
    "nbformat",
)


def preload():
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an extension that is not installed: the server does without it too
            pass


def become(assignment):
    """Turn into the learner's process: groups, gid, uid (no way back), umask, folder, environment."""
    uid, gid = int(assignment["uid"]), int(assignment["gid"])
    if uid == 0 or gid == 0:
        raise SystemExit("a warm sandbox never runs a learner as root")
    os.setgroups([int(g) for g in assignment.get("groups", ())])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("could not drop to the learner's uid")
    os.umask(0o077)
    os.chdir(assignment["cwd"])
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in assignment["env"].items()})
    sys.argv = [str(a) for a in assignment["argv"]]


def main():
    preload()
    print(READY, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # not needed after all
    become(json.loads(line))
    os.dup2(2, 1)  # the server logs like any sandbox's; nobody reads the pipe any more
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    from jupyterhub.singleuser import main as singleuser

    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
