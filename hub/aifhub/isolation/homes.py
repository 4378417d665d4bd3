"""Where a learner's home folder is: ``<work root>/<home_folder_name(user)>``, one rule for the hub's
spawner (which makes it) and the service's disk watch (which measures it)."""

import hashlib
import os
import re

HASHED = re.compile(r"-[0-9a-f]{16}$")


def home_folder_name(user):
    """The folder of ``user``'s home: the name itself, unless it cannot be one (too long for a file
    name, or with a '/'): then a readable part of it and a hash of the whole name."""
    if "/" not in user and user not in (".", "..") and len(os.fsencode(user)) <= 200 and not HASHED.search(user):
        return user  # (a name that looks hashed is hashed too: nobody can pick another's folder name)
    digest = hashlib.sha256(user.encode()).hexdigest()[:16]
    part = user.replace("/", "_")[:100]
    while len(os.fsencode(part)) > 100:
        part = part[:-1]
    return f"{part.strip('.') or 'user'}-{digest}"
