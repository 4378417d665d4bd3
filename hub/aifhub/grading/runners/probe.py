"""Can a graded kernel's uid run the environment from inside its namespace? Asked once, as root, before
the hub starts (:mod:`aifhub.cli.preflight`)::

    python -m aifhub.grading.runners.probe SCRATCH_FOLDER UID

It builds what a graded kernel gets (:mod:`.mounts`: a scratch tmpfs in ``SCRATCH_FOLDER``, mount, IPC
and network namespaces, a private /tmp, /var/tmp and /dev) and runs this Python there as ``UID``,
importing what a kernel imports. Exit status 0 when that works (or when this machine gives graded
kernels no namespace: they then see the machine as it is); otherwise what went wrong is on stderr.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import mounts
from .kernel import software

IMPORTS = "import ipykernel, nbformat, aifhub"


def run(folder, uid):
    folder = Path(folder)
    folder.mkdir(mode=0o711, parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="probe-", dir=folder))
    try:
        scratch.chmod(0o711)
        try:
            mounts.mount_scratch(scratch, 16 * 2**20)
        except OSError:  # no tmpfs here: graded kernels get no mount namespace either
            return 0
        for name in ("tmp", "shm"):
            (scratch / name).mkdir(mode=0o700)
            os.chown(scratch / name, uid, uid)
        pid = os.fork()
        if pid == 0:
            try:
                mounts.isolate_kernel(str(scratch), "unshare", (), software({}))
                os.chdir(scratch / "tmp")
                setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
                argv = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
                os.execv(setpriv, argv + [sys.executable, "-c", IMPORTS])
            except BaseException as exc:  # noqa: BLE001  (the child reports whatever stops it)
                print(f"could not start it there: {exc}", file=sys.stderr, flush=True)
            os._exit(111)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        mounts.release_scratch(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m aifhub.grading.runners.probe SCRATCH_FOLDER UID", file=sys.stderr)
        return 2
    return run(argv[0], int(argv[1]))


if __name__ == "__main__":
    sys.exit(main())
