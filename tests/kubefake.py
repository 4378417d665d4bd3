"""A stand-in for what these machines cannot run: a Kubernetes API server with a kubelet behind it.

It answers the calls aifhub's grading makes (create, read, list and delete Jobs; list pods) and
runs each Job's pod for real, as a kubelet would: the container's command in a bubblewrap sandbox
that has only the pod's volumes (its PersistentVolumeClaim subPath, emptyDirs), no network, a PID
namespace of its own, the container's environment and working directory, and the Job's deadline.
The image is not pulled: the host's Python environment stands in for it, read-only. Every Job
created is kept, as sent, for the tests to inspect and validate.
"""

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parent.parent
BWRAP = shutil.which("bwrap")
JOBS = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?(/status)?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def matches(labels, selector):
    pairs = [p.split("=", 1) for p in selector.split(",") if p]
    return all(labels.get(k) == v for k, v in pairs)


class FakeCluster:
    def __init__(self, volumes, workdir):
        """``volumes``: PersistentVolumeClaim name -> local folder standing for it."""
        self.volumes = {name: Path(path) for name, path in volumes.items()}
        self.workdir = Path(workdir)
        self.jobs = {}  # (namespace, name) -> job
        self.pods = {}  # (namespace, job name) -> pod
        self.procs = {}
        self.created = []  # every Job manifest, as sent
        self.deleted = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.kill()

    def kubeconfig(self, path, namespace="aifhub"):
        Path(path).write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return str(path)

    # -- the API -------------------------------------------------------------

    def _handler(self):
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                m = JOBS.match(urlparse(self.path).path)
                if not m or m.group(2):
                    return self.reply(404, {"kind": "Status", "code": 404})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.reply(*cluster.create_job(m.group(1), body))

            def do_GET(self):
                url = urlparse(self.path)
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                if m := JOBS.match(url.path):
                    if m.group(2):
                        job = cluster.jobs.get((m.group(1), m.group(2)))
                        return self.reply(200, job) if job else self.reply(404, {"kind": "Status", "code": 404})
                    items = [j for (ns, _), j in cluster.jobs.items() if ns == m.group(1)
                             and matches(j["metadata"].get("labels", {}), selector)]
                    return self.reply(200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items})
                if m := PODS.match(url.path):
                    items = [p for (ns, _), p in cluster.pods.items() if ns == m.group(1)
                             and matches(p["metadata"].get("labels", {}), selector)]
                    return self.reply(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                self.reply(404, {"kind": "Status", "code": 404})

            def do_DELETE(self):
                m = JOBS.match(urlparse(self.path).path)
                if not m or not m.group(2):
                    return self.reply(404, {"kind": "Status", "code": 404})
                found = cluster.delete_job(m.group(1), m.group(2))
                self.reply(200 if found else 404, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                   "status": "Success" if found else "Failure"})

        return Handler

    def create_job(self, namespace, job):
        name = job["metadata"]["name"]
        with self.lock:
            if (namespace, name) in self.jobs:
                return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"}
            self.created.append(json.loads(json.dumps(job)))
            job["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
            job["status"] = {"startTime": now(), "active": 1}
            labels = dict(job["spec"]["template"]["metadata"].get("labels", {}), **{"job-name": name})
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{name}-{uuid.uuid4().hex[:5]}", "namespace": namespace, "labels": labels},
                   "spec": job["spec"]["template"]["spec"], "status": {"phase": "Pending"}}
            self.jobs[(namespace, name)] = job
            self.pods[(namespace, name)] = pod
        threading.Thread(target=self.run_pod, args=(namespace, name), daemon=True).start()
        return 201, job

    def delete_job(self, namespace, name):
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
            self.pods.pop((namespace, name), None)
            proc = self.procs.pop((namespace, name), None)
            if job is not None:
                self.deleted.append(name)
        if proc is not None and proc.poll() is None:
            proc.kill()
        return job is not None

    # -- the kubelet ---------------------------------------------------------

    def sandbox_command(self, spec):
        container = spec["containers"][0]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        cmd = [BWRAP, "--unshare-all", "--die-with-parent", "--new-session",
               "--uid", str(spec["securityContext"]["runAsUser"]), "--gid", str(spec["securityContext"]["runAsGroup"]),
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
               "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin", "--ro-bind", "/etc", "/etc",
               "--proc", "/proc", "--dev", "/dev"]
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                cmd += ["--tmpfs", mount["mountPath"]]
            else:
                source = self.volumes[volume["persistentVolumeClaim"]["claimName"]] / mount.get("subPath", "")
                cmd += ["--bind", str(source), mount["mountPath"]]
        # the "image": after the volumes, so that a checkout under /tmp is not hidden by the pod's /tmp
        for path in sorted({sys.prefix, sys.base_prefix, str(REPO / "hub")} - {"/usr"}):
            cmd += ["--ro-bind", path, path]
        cmd += ["--chdir", container.get("workingDir", "/"), "--clearenv",
                "--setenv", "PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin"]
        for env in container.get("env", []):
            cmd += ["--setenv", env["name"], env["value"]]
        command = list(container["command"])
        if command[0] == "python":
            command[0] = sys.executable
        return cmd + command

    def run_pod(self, namespace, name):
        job, pod = self.jobs.get((namespace, name)), self.pods.get((namespace, name))
        if job is None or pod is None:
            return
        log = open(self.workdir / f"{name}.log", "wb")
        with self.lock:
            proc = subprocess.Popen(self.sandbox_command(pod["spec"]), stdout=log, stderr=subprocess.STDOUT)
            self.procs[(namespace, name)] = proc
            pod["status"] = {"phase": "Running", "startTime": now()}
        try:
            code = proc.wait(timeout=job["spec"].get("activeDeadlineSeconds"))
            deadline = False
        except subprocess.TimeoutExpired:
            proc.kill()
            code, deadline = proc.wait(), True
        log.close()
        with self.lock:
            if (namespace, name) not in self.jobs:
                return  # deleted meanwhile
            ok = code == 0 and not deadline
            pod["status"] = {"phase": "Succeeded" if ok else "Failed", "containerStatuses": [{
                "name": pod["spec"]["containers"][0]["name"], "ready": False, "restartCount": 0, "image": "fake",
                "imageID": "fake", "state": {"terminated": {"exitCode": code, "reason": "Completed" if ok else "Error"}}}]}
            cond = {"type": "Complete" if ok else "Failed", "status": "True", "lastTransitionTime": now()}
            if deadline:
                cond["reason"] = "DeadlineExceeded"
            job["status"] = {"startTime": job["status"]["startTime"], "completionTime": now(),
                             "succeeded" if ok else "failed": 1, "conditions": [cond]}
