"""Each sandbox's own log, bounded in size: ``<state>/logs/sandboxes/<name>.log``.

Threat model: whatever a sandbox writes to its standard output and error is the learner's text. Had
it the hub's (or the service's) stderr, a learner could write lines that look like the hub's own
into the hub's log, and as much as they like. So a sandbox's stdout and stderr are the write end of
a pipe; at the read end an unprivileged copier (``head -c <limit>``, then ``cat`` into /dev/null; running
as the sandbox's uid, in no sandbox, holding nothing but the pipe and the log file) keeps the first
``limit`` bytes in the log file and drops the rest: the disk never fills, and the sandbox's writes
never fail or block (a kernel whose stderr stopped being read would hang). The log file is made by
root in root's private folder before the copier starts, and opened without following links.

:func:`open_log` returns the pipe's write end for the sandbox's process; the caller closes its copy
once the process is started.
"""

import os
import re
import subprocess
from pathlib import Path

DEFAULT_LIMIT = 4 * 1024 * 1024  # bytes kept of one sandbox's output
NOBODY = 65534
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def log_dir(state_dir):
    return Path(state_dir) / "logs" / "sandboxes"


def log_path(state_dir, name):
    """The log of the sandbox ``name`` (a user and server name; characters other than ``[A-Za-z0-9._@+-]``
    become ``_``)."""
    return log_dir(state_dir) / f"{_UNSAFE.sub('_', name)[:200]}.log"


def open_log(state_dir, name, limit=DEFAULT_LIMIT, uid=NOBODY, gid=NOBODY):
    """Start the copier into the log of ``name`` and return ``(write_fd, copier)``: give ``write_fd`` to the
    sandbox as its stdout and stderr, then close it here. ``uid``/``gid``: whom the copier runs as when
    this process is root (it holds only the pipe and the open log file)."""
    folder = log_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = log_path(state_dir, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    log_fd = os.open(path, flags, 0o600)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:

        def drop():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        copier = subprocess.Popen(
            ["/bin/sh", "-c", 'head -c "$0"; exec cat > /dev/null', str(int(limit))],
            stdin=read_fd,
            stdout=log_fd,
            stderr=subprocess.DEVNULL,
            preexec_fn=drop if os.geteuid() == 0 else None,
            start_new_session=True,  # the hub's Ctrl-C is not the copier's: it ends when the sandbox's output does
            close_fds=True,
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
        os.close(log_fd)
    return write_fd, copier


def rename(state_dir, old, new):
    """Give a warm sandbox's log its learner's name (the copier keeps writing the same file)."""
    try:
        os.replace(log_path(state_dir, old), log_path(state_dir, new))
    except OSError:
        pass
