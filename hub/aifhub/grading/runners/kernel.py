"""Start a grading kernel in a sandbox: its own uid, no network, resource limits, a clean environment.

nbgrader starts kernels through a kernelspec whose argv is::

    python -m aifhub.grading.runners.kernel SPEC.json -f {connection_file} [kernel arguments...]

This module runs as the grading worker's user (root on the embedded hub), reads the job's
SPEC (written by the worker, never by student code), puts itself in the job's control group (its
memory and process limits hold for the job as a whole: every kernel and every process they start),
applies the per-process limits, and replaces itself with
``setpriv --reuid=U ... -- python -m ipykernel_launcher ...`` in namespaces of its own
(:func:`.mounts.isolate_kernel`; without a scratch tmpfs, ``unshare --net --ipc``): the kernel
keeps this process id (nbgrader can interrupt and kill it) but runs as uid U, in network and IPC
namespaces of its own (loopback only, which is down; no System V segment of anyone else's, none
left behind), with only the environment below. The kernel talks to nbgrader over ZeroMQ ``ipc``
sockets in the job's scratch folder, which works across network namespaces.

Keep this module free of heavy imports: it runs once per graded notebook.
"""

import json
import os
import resource
import shutil
import sys

SAFE_ENV = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
    "PYTHONDONTWRITEBYTECODE": "1",
    "NBGRADER_EXECUTION": "autograde",
}


def network_wrapper(mode, as_root):
    """The argv prefix that takes the network and the host's System V IPC away, for ``mode`` in unshare | none
    (none: a machine without unshare; nothing is taken away)."""
    if mode == "none":
        return []
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    # not root: a user namespace of its own too, in which the kernel keeps its uid (util-linux >= 2.38)
    return [unshare, "--net", "--ipc", "--"] if as_root else [unshare, "--map-current-user", "--net", "--ipc", "--"]


def join_group(paths):
    """Put this process (and so the kernel and all it starts) in the job's control group, as root."""
    for path in paths or ():
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def build_command(spec, kernel_args):
    uid = spec.get("uid")
    # isolated: the namespaces are made here already (:func:`.mounts.isolate_kernel`)
    cmd = [] if spec.get("isolate") else network_wrapper(spec.get("network", "unshare"), os.geteuid() == 0)
    if uid is not None:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        cmd += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
    return cmd + [spec.get("python") or sys.executable, "-m", "ipykernel_launcher", *kernel_args]


def software(spec):
    """The folders the kernel's Python needs (kept visible where a private /tmp or /var/tmp would hide them)."""
    from ...isolation.namespace import software_folders

    python = spec.get("python") or sys.executable
    return (*software_folders(), os.path.dirname(os.path.realpath(python)))


def apply_limits(spec):
    def setlimit(which, value):
        if value:
            resource.setrlimit(which, (int(value), int(value)))

    cpu = spec.get("cpu_seconds")
    if cpu:  # SIGXCPU at the soft limit, SIGKILL a little later
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 5))
    setlimit(resource.RLIMIT_DATA, spec.get("memory_bytes"))
    setlimit(resource.RLIMIT_FSIZE, spec.get("file_bytes"))
    setlimit(resource.RLIMIT_NPROC, spec.get("processes"))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m aifhub.grading.runners.kernel SPEC.json -f CONNECTION_FILE [ARGS...]", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    kernel_args = argv[1:]
    uid = spec.get("uid")
    if "-f" in kernel_args and uid is not None:  # the kernel reads its connection file after dropping root
        fd = os.open(kernel_args[kernel_args.index("-f") + 1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchown(fd, uid, uid)
        finally:
            os.close(fd)
    # in the scratch folder, which is root's: the kernel's uid cannot put a link in its place
    pidfile = os.path.join(spec["scratch"], "kernel.pid")
    fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    env = dict(SAFE_ENV)
    env.update(
        {
            "PATH": spec["path"],
            "HOME": spec["home"],
            "TMPDIR": spec["tmp"],
            "JUPYTER_RUNTIME_DIR": spec["runtime"],
            "JPY_PARENT_PID": str(os.getppid()),
            "IPYTHONDIR": os.path.join(spec["home"], ".ipython"),
        }
    )
    env.update(spec.get("env") or {})
    join_group(spec.get("cgroup"))
    if spec.get("isolate") and uid is not None:  # machine read-only, /tmp, /dev and /proc the job's
        from .mounts import isolate_kernel

        isolate_kernel(spec["scratch"], spec.get("network", "unshare"), spec.get("devices") or (), software(spec))
    os.chdir(spec["work"])
    apply_limits(spec)
    cmd = build_command(spec, kernel_args)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    sys.exit(main())
