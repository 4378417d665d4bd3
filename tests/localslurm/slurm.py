"""Start and stop the local Slurm: munge, MariaDB, slurmdbd, slurmctld, two slurmd, slurmrestd."""

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PLUGIN_DIRS = ["/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/slurm-wlm", "/usr/lib64/slurm"]
PACKAGES = "munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins slurmdbd slurmrestd slurm-wlm-jwt-plugin slurm-wlm-mysql-plugin mariadb-server"
NVIDIA_MAJOR = 195  # the character-device major number of NVIDIA's driver: gres/gpu's File= accepts these


class SlurmError(RuntimeError):
    """The local Slurm did not start (the message says which daemon, and where its log is)."""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_tools():
    """The programs the local Slurm needs that this machine lacks (`make slurm-tools` installs them, as root)."""
    tools = ["munged", "slurmctld", "slurmd", "slurmdbd", "slurmrestd", "sbatch", "sacctmgr", "mariadbd"]
    missing = [t for t in tools if not shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]
    if not plugin_dir():
        missing.append("slurm plugins")
    return missing


def plugin_dir():
    return next((d for d in PLUGIN_DIRS if Path(d, "gres_gpu.so").exists()), None)


def _which(name):
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def jwt_token(key, username, lifetime=3600):
    """An HS256 token for slurmrestd's auth/jwt, as `scontrol token` makes (the `sun` claim names the user)."""

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iat": now, "exp": now + lifetime, "sun": username}).encode())
    sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


class LocalSlurm:
    """One cluster in ``state`` (logs under ``state/log``). ``nodes`` compute nodes with ``gpus`` GPUs each
    (type ``gpu_type``), ``cpus`` CPUs and ``memory_mb`` each (declared, not measured: SlurmdParameters=
    config_overrides), all listening on 127.0.0.1 on free ports."""

    def __init__(self, state, nodes=2, gpus=2, cpus=8, memory_mb=64000, gpu_type="h100", cluster="aifhub"):
        self.state = Path(state)
        self.node_names = [f"node{i + 1}" for i in range(nodes)]
        self.gpus, self.cpus, self.memory_mb, self.gpu_type, self.cluster = gpus, cpus, memory_mb, gpu_type, cluster
        self.procs = {}
        self.timings = {}
        self.host = socket.gethostname().split(".")[0]
        self.ports = {
            "ctld": _free_port(),
            "dbd": _free_port(),
            "mysql": _free_port(),
            "rest": _free_port(),
            **{n: _free_port() for n in self.node_names},
        }
        s = self.state
        self.munge_socket = s / "munge" / "munge.sock"
        self.mysql_socket = s / "mysql" / "mysql.sock"
        self.conf = s / "etc" / "slurm.conf"
        self.jwt_key = s / "etc" / "jwt.key"
        self.bin_dir = s / "bin"
        self.rest_url = f"http://127.0.0.1:{self.ports['rest']}"

    # -- what clients need ------------------------------------------------------------------------------------

    @property
    def env(self):
        """The environment of a Slurm client (sbatch, squeue, sacctmgr) talking to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def settings(self):
        """The settings aifhub needs (`make slurm` prints them as export lines; docs/slurm.md)."""
        return {
            "SLURM_CONF": str(self.conf),
            "AIFHUB_SLURM_REST_URL": self.rest_url,
            "AIFHUB_SLURM_JWT_KEY": str(self.jwt_key),
            "AIFHUB_SLURM_CLUSTER": self.cluster,
            "AIFHUB_SLURM_PARTITION": "gpu",
        }

    def run(self, *args, check=True, timeout=60):
        """A Slurm client command (``sacctmgr -i ...``, ``squeue ...``) against this cluster."""
        env = {**os.environ, **self.env}
        return subprocess.run(args, env=env, check=check, timeout=timeout, capture_output=True, text=True)

    def token(self, username, lifetime=3600):
        return jwt_token(self.jwt_key.read_bytes(), username, lifetime)

    # -- start ---------------------------------------------------------------------------------------------------

    def start(self, timeout=90):
        missing = missing_tools()
        if missing:
            raise SlurmError(f"missing {', '.join(missing)}: apt-get install {PACKAGES} (make slurm-tools, as root)")
        t0 = time.monotonic()
        for sub in ("etc", "log", "munge", "mysql/data", "ctld", "spool", "dev", "run"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o755)
        self._start_munge()
        self._start_mysql()
        self._write_conf()
        self._start_dbd()
        self.timings["dbd_s"] = round(time.monotonic() - t0, 1)
        self.run("sacctmgr", "-i", "add", "cluster", self.cluster)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run("scontrol", "ping", check=False).stdout.find("UP") >= 0, "slurmctld", timeout)
        stepd = _which("slurmstepd") or "/usr/sbin/slurmstepd"
        for n in self.node_names:
            (self.state / "spool" / n).mkdir(exist_ok=True)
            self._spawn(f"slurmd-{n}", [_which("slurmd"), "-D", "-N", n, "-f", str(self.conf), "-d", stepd])
        self._wait(self._nodes_idle, "slurmd", timeout)
        self._start_rest(timeout)
        self.timings["ready_s"] = round(time.monotonic() - t0, 1)
        return self

    def _spawn(self, name, args, env=None, **kw):
        log = open(self.state / "log" / f"{name}.out", "ab")  # noqa: SIM115 - kept open for the daemon's life
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True, **kw
        )
        log.close()

    def _wait(self, ready, name, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pname, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SlurmError(f"{pname} exited ({proc.returncode}); logs in {self.state / 'log'}")
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise SlurmError(f"{name} not ready after {timeout} s; logs in {self.state / 'log'}")

    def _start_munge(self):
        key = self.state / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        os.chmod(self.state / "munge", 0o755)
        m = self.state / "munge"
        self._spawn(
            "munged",
            [_which("munged"), "-F", "-f", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--pid-file={m / 'munged.pid'}", f"--log-file={self.state / 'log' / 'munged.log'}",
             f"--seed-file={m / 'munged.seed'}"],
        )  # fmt: skip
        self._wait(lambda: self.munge_socket.exists(), "munged", 20)

    def _start_mysql(self):
        data = self.state / "mysql" / "data"
        subprocess.run(
            [_which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self._spawn(
            "mariadbd",
            [_which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={self.mysql_socket}",
             f"--port={self.ports['mysql']}", "--bind-address=127.0.0.1", "--user=root",
             "--innodb-buffer-pool-size=64M", "--skip-name-resolve", f"--pid-file={self.state / 'mysql' / 'pid'}",
             "--innodb-log-file-size=16M", "--performance-schema=off"],
        )  # fmt: skip
        client = _which("mariadb") or _which("mysql")
        sql = ["CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'",
               "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'"]  # fmt: skip
        self._wait(
            lambda: subprocess.run(
                [client, "--no-defaults", "-uroot", f"--socket={self.mysql_socket}", "-e", ";".join(sql)],
                capture_output=True, timeout=10,
            ).returncode == 0,
            "mariadbd", 60,
        )  # fmt: skip

    def _write_conf(self):
        s, p = self.state, self.ports
        self.jwt_key.write_bytes(os.urandom(32))
        os.chmod(self.jwt_key, 0o600)
        dbd = s / "etc" / "slurmdbd.conf"
        dbd.write_text(
            "\n".join([
                "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
                "AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={self.jwt_key}",
                "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={p['dbd']}", "SlurmUser=root",
                f"LogFile={s / 'log' / 'slurmdbd.log'}", f"PidFile={s / 'run' / 'slurmdbd.pid'}",
                f"PluginDir={plugin_dir()}", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
                "StorageLoc=slurm_acct_db", f"StoragePort={p['mysql']}", "StorageUser=slurm", "StoragePass=slurm",
                "DebugLevel=info",
            ]) + "\n"
        )  # fmt: skip
        os.chmod(dbd, 0o600)
        # GPUs: device nodes with NVIDIA's major number in a private folder; gres.conf names them (File=)
        gres = ["AutoDetect=off"]
        for i, n in enumerate(self.node_names):
            files = []
            for g in range(self.gpus):
                dev = s / "dev" / f"nvidia{i * self.gpus + g}"
                if not dev.exists():
                    os.mknod(dev, 0o666 | 0o020000, os.makedev(NVIDIA_MAJOR, i * self.gpus + g))
                files.append(str(dev))
            if files:
                gres.append(f"NodeName={n} Name=gpu Type={self.gpu_type} File={','.join(files)}")
        (s / "etc" / "gres.conf").write_text("\n".join(gres) + "\n")
        nodes = [
            f"NodeName={n} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={p[n]} CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} Gres=gpu:{self.gpu_type}:{self.gpus} State=UNKNOWN"
            for n in self.node_names
        ]
        self.conf.write_text(
            "\n".join([
                f"ClusterName={self.cluster}", f"SlurmctldHost={self.host}(127.0.0.1)", f"SlurmctldPort={p['ctld']}",
                f"SlurmdPort={p[self.node_names[0]]}", "SlurmUser=root", "SlurmdUser=root",
                "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}", "CredType=cred/munge",
                "AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={self.jwt_key}",
                f"PluginDir={plugin_dir()}", f"StateSaveLocation={s / 'ctld'}", f"SlurmdSpoolDir={s / 'spool' / '%n'}",
                f"SlurmctldPidFile={s / 'run' / 'slurmctld.pid'}", f"SlurmdPidFile={s / 'run' / 'slurmd-%n.pid'}",
                f"SlurmctldLogFile={s / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={s / 'log' / 'slurmd-%n.log'}",
                "SlurmctldDebug=info", "SlurmdDebug=info",
                "ProctrackType=proctrack/pgid", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
                "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "GresTypes=gpu",
                "SlurmdParameters=config_overrides", "MpiDefault=none", "ReturnToService=2",
                "SchedulerType=sched/backfill", "SchedulerParameters=bf_interval=1,sched_interval=1",
                "PriorityType=priority/basic", "JobCompType=jobcomp/none", "KillWait=2", "MinJobAge=300",
                "InactiveLimit=0", "Waittime=0", "MessageTimeout=10",
                "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                f"AccountingStoragePort={p['dbd']}", f"AccountingStoragePass={self.munge_socket}",
                "AccountingStorageTRES=gres/gpu", "AccountingStorageEnforce=associations,limits,qos,safe",
                "PriorityUsageResetPeriod=NONE", "AccountingStoreFlags=job_comment",
                *nodes,
                f"PartitionName=gpu Nodes={','.join(self.node_names)} Default=YES MaxTime=INFINITE State=UP",
            ]) + "\n"
        )  # fmt: skip

    def _start_dbd(self):
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"], env={"SLURM_CONF": str(self.conf)})
        self._wait(lambda: self.run("sacctmgr", "-n", "list", "cluster", timeout=10).returncode == 0, "slurmdbd", 60)

    def _nodes_idle(self):
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=10).stdout.split("\n")
        states = dict(line.split() for line in out if line.strip())
        return len(states) == len(self.node_names) and all(v.startswith("idle") for v in states.values())

    def _start_rest(self, timeout):
        env = {"SLURM_CONF": str(self.conf), "SLURM_JWT": "daemon", "SLURMRESTD_SECURITY": "disable_user_check"}
        self._spawn(
            "slurmrestd",
            [_which("slurmrestd"), "-a", "rest_auth/jwt", "-s", "openapi/v0.0.38", "-u", "nobody", "-g", "nogroup",
             f"127.0.0.1:{self.ports['rest']}"],
            env=env,
        )  # fmt: skip
        self._wait(
            lambda: socket.create_connection(("127.0.0.1", self.ports["rest"]), 1).close() is None,
            "slurmrestd",
            timeout,
        )

    # -- stop ----------------------------------------------------------------------------------------------------

    def stop(self):
        """Cancel every job (their processes end with them), then stop the daemons."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                jobs = self.run("squeue", "-h", "-a", "-o", "%i", check=False, timeout=10).stdout.split()
                if jobs:
                    self.run("scancel", *jobs, check=False, timeout=10)
                    deadline = time.monotonic() + 20
                    while (
                        time.monotonic() < deadline
                        and self.run("squeue", "-h", "-a", "-o", "%i", timeout=10).stdout.strip()
                    ):
                        time.sleep(0.3)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in [
            "slurmrestd",
            *[f"slurmd-{n}" for n in self.node_names],
            "slurmctld",
            "slurmdbd",
            "mariadbd",
            "munged",
        ]:
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
