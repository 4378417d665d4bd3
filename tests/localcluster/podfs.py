"""Mount points that the image would have but the host's read-only /usr and /etc lack.

A container's tree shares the host's /usr and /etc, read-only (:mod:`.runner`). A volume mounted where the host has
no folder (the chart's hub at ``/usr/local/etc/jupyterhub/``, its user scheduler at ``/etc/user-scheduler``) cannot
be made there: bubblewrap would have to create the mount point in a read-only tree. As an image's own layer would
have it, the deepest folder that does exist becomes a tmpfs in the container, with the host's entries of that
folder bound back into it (read-only; links as links), so the mount point can be made and nothing of the host's
is hidden or written.
"""

import os

READ_ONLY_TREES = ("/usr", "/etc")


def _existing_ancestor(path):
    parent = os.path.dirname(path.rstrip("/"))
    while parent != "/" and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    return parent


def mountpoint_args(paths):
    """bwrap arguments (after /usr and /etc are bound, before the volumes) that let ``paths`` be mounted."""
    folders = set()
    for path in paths:
        path = os.path.normpath(path)
        if not any(path.startswith(tree + "/") for tree in READ_ONLY_TREES) or os.path.lexists(path):
            continue
        folders.add(_existing_ancestor(path))
    args = []
    for folder in sorted(folders, key=lambda p: p.count("/")):
        args += ["--perms", "0755", "--tmpfs", folder]
        for entry in sorted(os.listdir(folder)):
            host = os.path.join(folder, entry)
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                args += ["--ro-bind-try", host, host]
            elif os.path.exists(host):
                args += ["--ro-bind-try", host, host]
    return args
