"""Course materials for sandboxes that do not share the hub's file system (Kubernetes pods).

The local spawner copies a course's materials into the learner's work folder itself. A pod's
volume is not the hub's to write, so the pod fetches them: an init container of the course's own
image (``course-materials``) runs ``python -m aifhub.kube.materials HOME`` as the learner's
user, before JupyterLab starts. It asks the aifhub service for the course's archive
(``GET /services/aifhub/api/v1/courses/<id>/materials``, with the server's own JupyterHub token,
which may reach the service), and unpacks it into the learner's per-course volume without
replacing anything already there: the learner's edits survive every restart. When the service
cannot be reached (after a few tries) the sandbox starts without new materials, never blocked. The service packs
the same files the local spawner copies (no instructors' files, no hidden ones, no links).
"""

import argparse
import io
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

MAX_ARCHIVE_BYTES = 512 * 1024 * 1024


def course_archive(course_path):
    """The tar.gz of what learners get from a course folder (service side; never follows a link)."""
    from .. import fsafe
    from ..catalog.materials import is_private

    with fsafe.opened(course_path) as d:
        return fsafe.pack(d, skip=is_private)


def unpack(data, dest):
    """Unpack a materials archive into ``dest``, keeping every file that exists there. Returns (added, kept).

    This runs as the learner's user in the learner's own volume, so it can do nothing the learner could not;
    names that would leave ``dest`` are refused all the same, and files are only ever created new."""
    dest = Path(dest)
    added = kept = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()):
                continue  # the service packs plain files only; anything else is not ours to make
            parts = Path(member.name).parts
            if not parts or member.name.startswith("/") or ".." in parts or "\0" in member.name:
                print(f"course-materials: skipped {member.name!r}: not a plain relative name", file=sys.stderr)
                continue
            target = dest.joinpath(*parts)
            if os.path.lexists(target):
                kept += member.isfile()
                continue
            if member.isdir():
                target.mkdir(parents=True, mode=0o700, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "xb") as out:
                out.write(src.read())
            os.chmod(target, (member.mode or 0o600) & 0o755 | 0o600)
            added += 1
    return added, kept


def fetch(url, token, timeout=60):
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        data = r.read(MAX_ARCHIVE_BYTES + 1)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ValueError(f"the materials archive is larger than {MAX_ARCHIVE_BYTES} bytes")
    return data


def main(argv=None):
    """``python -m aifhub.kube.materials DEST``: what the pod's course-materials init container runs."""
    parser = argparse.ArgumentParser(prog="python -m aifhub.kube.materials", description=main.__doc__)
    parser.add_argument("dest", help="the learner's per-course folder (the pod's home)")
    parser.add_argument(
        "--course", default=os.environ.get("AIFHUB_COURSE", ""), help="course id (default: $AIFHUB_COURSE)"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("AIFHUB_EXCHANGE_URL", ""),
        help="the aifhub service's URL as sandboxes reach it (default: $AIFHUB_EXCHANGE_URL)",
    )
    parser.add_argument(
        "--attempts", type=int, default=4, help="tries while the service cannot be reached (default: 4)"
    )
    args = parser.parse_args(argv)
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not (args.course and args.url and token):
        print(
            "course-materials: AIFHUB_COURSE, AIFHUB_EXCHANGE_URL and JUPYTERHUB_API_TOKEN are needed", file=sys.stderr
        )
        return 2
    url = f"{args.url.rstrip('/')}/api/v1/courses/{args.course}/materials"
    data = None
    for attempt in range(args.attempts):
        try:
            data = fetch(url, token)
            break
        except (urllib.error.URLError, OSError, ValueError) as exc:
            print(
                f"course-materials: could not fetch the materials of {args.course} from {url}: {exc}", file=sys.stderr
            )
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
                break
            time.sleep(2**attempt)
    if data is None:  # the sandbox starts all the same: the learner's files are there, materials come next time
        print("course-materials: starting without new materials", file=sys.stderr)
        return 0
    added, kept = unpack(data, args.dest)
    print(f"course-materials: {args.course}: {added} file(s) added, {kept} kept as the learner left them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
